"""The console's list pages redraw themselves from the platform's event stream, in a real browser: a
dataset uploaded and a model trained through the SDK appear in their open lists without a reload."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect

import lepton_ai as la
from lepton_platform.demo import PipelineResult
from lepton_platform.embedded import EmbeddedPlatform
from tests.test_console_e2e import context, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

__all__ = ["context"]  # the fixture, imported to be used here


def test_a_new_dataset_and_a_new_model_appear_in_their_open_lists(
    platform: EmbeddedPlatform, context: BrowserContext, pipeline_in_thread: PipelineResult, tmp_path: Path
) -> None:
    page = context.new_page()
    sign_in(page, platform, platform.api_key)
    page.goto(f"{platform.console_url}/datasets")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    name = f"console-live-{secrets.token_hex(3)}"
    csv = tmp_path / "live.csv"
    csv.write_text("x,y\n1,2\n3,4\n5,7\n")
    with la.Client(platform.api_key, platform.url) as client:
        client.datasets.upload(csv, name, progress=False)
    row = page.locator(f'#datasets tr[data-dataset="{name}"]')
    expect(row).to_be_visible(timeout=20_000)
    expect(row.locator("td").first).to_have_text("1")  # one version
    with la.Client(platform.api_key, platform.url) as client:
        client.datasets.upload(_second(csv, tmp_path), name, progress=False)
    expect(row.locator("td").first).to_have_text("2")  # the list redrew with the new version's count
    assert page.evaluate("window.sameDocument") is True

    page.goto(f"{platform.console_url}/models")
    page.evaluate("window.sameDocument = true")
    model = f"console-live-{secrets.token_hex(3)}"
    with la.Client(platform.api_key, platform.url) as client:
        dataset = client.datasets.get(pipeline_in_thread.dataset_version.version_id)
        la.models.Ridge().fit(dataset, pipeline_in_thread.job.target, model_name=model, progress=False)
    expect(page.locator(f'#models tr[data-model="{model}"]')).to_be_visible(timeout=20_000)
    assert page.evaluate("window.sameDocument") is True

    # A pattern that names no event is refused, as the platform refuses it.
    answer = page.request.get(f"{platform.console_url}/events/stream?replay=0&pattern=nothing.here")
    assert answer.status == 404


def _second(csv: Path, tmp_path: Path) -> Path:
    """Other bytes under the same name: a second version."""
    other = tmp_path / "live-2.csv"
    other.write_text(csv.read_text().replace("5,7", "5,8"))
    return other
