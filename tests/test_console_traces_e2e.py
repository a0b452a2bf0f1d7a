"""A pipeline run's trace as a timeline in the console, in a real browser: followed from the live
event tail's link, and the session pipeline's whole trace across the services."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect

import lepton_ai as la
from lepton_platform.demo import PipelineResult
from lepton_platform.embedded import EmbeddedPlatform
from tests.test_console_e2e import AXE, context, shot, sign_in, violations_in_both_languages

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

__all__ = ["context"]  # the fixture, imported to be used here


def test_an_event_s_trace_link_opens_its_timeline(
    platform: EmbeddedPlatform, context: BrowserContext, tmp_path: Path
) -> None:
    page = context.new_page()
    sign_in(page, platform, platform.api_key)
    page.goto(f"{platform.console_url}/events")
    expect(page.locator("#events-status")).to_have_text("Live")
    name = f"console-trace-{secrets.token_hex(3)}"
    csv = tmp_path / "trace.csv"
    csv.write_text("a,b\n1,2\n3,4\n")
    with la.Client(platform.api_key, platform.url) as client:
        version = client.datasets.upload(csv, name, progress=False)
    created = page.locator(f'#events li[data-name="dataset.version.created"]:has-text("{version.version_id}")')
    expect(created).to_have_count(1)
    created.locator("a.event-trace").click()
    expect(page).to_have_url(re.compile(r"/traces/[0-9a-f]{32}\?at="))
    expect(page.locator("#trace-timeline")).to_be_visible()
    expect(page.locator("#trace-events tbody th", has_text="dataset.version.created")).to_have_count(1)
    expect(page.locator("#trace-timeline .lane-name", has_text="data")).to_have_count(1)


def test_the_pipeline_s_trace_spans_the_services_in_time_order(
    platform: EmbeddedPlatform, context: BrowserContext, pipeline_in_thread: PipelineResult
) -> None:
    pipeline = pipeline_in_thread
    with la.Client(platform.api_key, platform.url) as client:
        at = client.models.version(pipeline.model_version.model_name, pipeline.model_version.version).created_at
    when = at.ToDatetime().isoformat() + "Z"
    context.add_init_script(path=str(AXE))
    page = context.new_page()
    sign_in(page, platform, platform.api_key)
    page.goto(f"{platform.console_url}/traces/{pipeline.trace_id}?at={when}")
    lanes = set(page.locator("#trace-timeline .lane-name").all_text_contents())
    assert {"data", "trainer", "evaluator", "registry"} <= lanes, lanes
    names = page.locator("#trace-events tbody th").all_inner_texts()
    assert names[0] == "dataset.created" and {"training.completed", "registry.version.created"} <= set(names)
    offsets = [float(x.strip("+ s")) for x in page.locator("#trace-events tbody td.num").all_inner_texts()]
    assert offsets == sorted(offsets) and offsets[0] == 0.0 and offsets[-1] > 0
    shot(page, "trace")
    found = violations_in_both_languages(page, {"trace": page.url})
    assert not any(found.values()), found

    # Another tenant, or a trace with no event of the tenant's: the same 404; a malformed id too.
    page.locator("#signout").click()
    sign_in(page, platform, platform.key_for("intruder"))
    for url in (f"/traces/{pipeline.trace_id}?at={when}", f"/traces/{'0' * 32}?at={when}", "/traces/nothing"):
        answer = page.goto(f"{platform.console_url}{url}")
        assert answer is not None and answer.status == 404, url
