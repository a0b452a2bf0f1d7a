"""The console's jobs and models pages in a real browser (Debian's headless Chromium, driven by
Playwright) against the session's platform: a training followed live on its open page, the jobs list,
a model's versions side by side with their evaluation plots, promoting a version, and axe-core on
the new pages in both languages. Screenshots go where tests/test_console_e2e.py puts its own.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

import lepton_ai as la
from lepton_platform.demo import PipelineResult
from lepton_platform.embedded import EmbeddedPlatform
from tests.test_console_e2e import assert_accessible, context, shot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

__all__ = ["context"]  # the fixture, imported to be used here


class Training(threading.Thread):
    """``model.fit`` on a thread, so the page can be watched meanwhile; ``job_id`` once it is submitted."""

    def __init__(self, platform: EmbeddedPlatform, version_id: str, target: str, model: la.models.Model, name: str):
        super().__init__(daemon=True)
        self.platform, self.version_id, self.target, self.model, self.name = platform, version_id, target, model, name
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with la.Client(self.platform.api_key, self.platform.url) as client:
                dataset = client.datasets.get(self.version_id)
                self.model.fit(dataset, self.target, model_name=self.name, progress=False)
        except BaseException as exc:  # reported by the test, not lost on the thread
            self.error = exc

    def job_id(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while not getattr(self.model, "job_id", "") and self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.error is None and getattr(self.model, "job_id", ""), self.error
        return str(self.model.job_id)

    def finish(self) -> None:
        self.join(120)
        assert not self.is_alive() and self.error is None, self.error


def percent(page: Page) -> int:
    return int(page.locator("#job-percent").inner_text().rstrip("%"))


def test_a_training_advances_on_its_open_page_without_reloading(
    platform: EmbeddedPlatform, context: BrowserContext, pipeline_in_thread: PipelineResult
) -> None:
    pipeline = pipeline_in_thread
    page = context.new_page()
    sign_in(page, platform, platform.api_key)
    page.locator("#nav-jobs").click()
    expect(page.locator("table#jobs")).to_be_visible()

    mlp = la.models.MLP(epochs=300, batch_size=8, early_stopping_patience=0)
    training = Training(
        platform, pipeline.dataset_version.version_id, pipeline.job.target, mlp, f"console-mlp-{secrets.token_hex(3)}"
    )
    training.start()
    job_id = training.job_id()
    page.goto(f"{platform.console_url}/jobs/{job_id}")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    seen = {percent(page)}
    deadline = time.monotonic() + 90
    while percent(page) < 100 and time.monotonic() < deadline:
        seen.add(percent(page))
        time.sleep(0.05)
    seen.add(percent(page))
    assert max(seen) == 100 and len(seen - {0, 100}) >= 2, sorted(seen)  # it advanced, step by step
    expect(page.locator("#job-state")).to_have_text("Succeeded", timeout=30_000)
    assert page.evaluate("window.sameDocument") is True
    curve = page.locator("svg.chart#job-curve[role=img]")
    expect(curve).to_be_visible()
    assert curve.evaluate("svg => svg.namespaceURI") == "http://www.w3.org/2000/svg"  # drawn, not shown as text
    assert page.locator("#job-curve polyline").count() >= 1
    assert "loss" in (curve.get_attribute("aria-label") or "").lower()
    assert page.locator("#job-progress").evaluate("p => p.value") == 1
    expect(page.locator("#job-cancel")).to_have_count(0)
    shot(page, "job")
    training.finish()

    page.locator("#nav-jobs").click()
    row = page.locator(f'#jobs tr[data-job="{job_id}"]')
    expect(row).to_contain_text("mlp_regressor")
    expect(row).to_contain_text("Succeeded")
    shot(page, "jobs")


def test_a_training_started_from_the_cli_appears_and_advances_in_the_open_jobs_list(
    platform: EmbeddedPlatform, context: BrowserContext, pipeline_in_thread: PipelineResult
) -> None:
    pipeline = pipeline_in_thread
    page = context.new_page()
    sign_in(page, platform, platform.api_key)
    page.locator("#nav-jobs").click()
    expect(page.locator("#jobs-status")).to_have_text("Live")
    page.evaluate("window.sameDocument = true")
    name = f"console-cli-{secrets.token_hex(3)}"
    env = {**os.environ, "LEPTON_URL": platform.url, "LEPTON_API_KEY": platform.api_key}
    cli = Path(sys.executable).parent / "lepton"
    args = ["train", pipeline.dataset_version.version_id, "--target", pipeline.job.target, "-a", "mlp_regressor"]
    args += ["-p", "epochs=150", "-p", "batch_size=8", "-p", "early_stopping_patience=0", "--name", name]
    with subprocess.Popen([str(cli), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as train:
        row = page.locator("#jobs tbody tr").filter(has_text=name)
        expect(row).to_have_count(1, timeout=30_000)  # it appeared, queued from another process
        seen = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seen.add(row.locator(".job-percent").inner_text())
            if row.locator(".job-state").inner_text() == "Succeeded":
                break
            time.sleep(0.05)
        _, err = train.communicate(timeout=120)
        assert train.returncode == 0, err
    expect(row.locator(".job-state")).to_have_text("Succeeded")
    expect(row.locator(".job-percent")).to_have_text("100%")
    assert len(seen - {"0%", "100%"}) >= 2, sorted(seen)  # it advanced, step by step, in the open list
    assert page.evaluate("window.sameDocument") is True
    row.locator("a").click()
    expect(page.locator("#job-state")).to_have_text("Succeeded")


def test_a_model_s_versions_and_plots_and_promoting_moves_the_champion(
    platform: EmbeddedPlatform, context: BrowserContext, pipeline_in_thread: PipelineResult
) -> None:
    pipeline = pipeline_in_thread
    page = context.new_page()
    sign_in(page, platform, platform.api_key)
    page.locator("#nav-models").click()
    piped = pipeline.model_version.model_name
    page.locator(f'#models tr[data-model="{piped}"] a').click()
    expect(page.locator("#model-name")).to_have_text(piped)
    expect(page.locator(f'#versions th[data-version="{pipeline.model_version.version}"]')).to_be_visible()
    plot = page.locator("#plots img").first
    expect(plot).to_be_visible()
    assert plot.get_attribute("alt")
    # The plots load lazily: scrolled to, the image must arrive and decode (a broken one never does).
    plot.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=plot.element_handle())
    shot(page, "model")

    name = f"console-promote-{secrets.token_hex(3)}"
    for model in (la.models.LinearRegression(), la.models.Ridge()):
        fit = Training(platform, pipeline.dataset_version.version_id, pipeline.job.target, model, name)
        fit.start()
        fit.finish()
    page.locator("#nav-models").click()
    expect(page.locator(f'#models tr[data-model="{name}"]')).to_be_visible()
    shot(page, "models")
    page.locator(f'#models tr[data-model="{name}"] a').click()
    expect(page.locator("#versions th[data-version]")).to_have_count(2)
    champion = page.locator("#versions th[data-version] .champion")
    before = champion.locator("xpath=..").get_attribute("data-version") if champion.count() else None
    target = "1" if before != "1" else "2"
    promote = page.locator("form.promote").filter(has=page.locator(f'input[name=version][value="{target}"]'))
    promote.locator("button").focus()
    page.keyboard.press("Enter")  # keyboard alone
    expect(page.locator(f'#versions th[data-version="{target}"] .champion')).to_be_visible()
    expect(champion).to_have_count(1)
    shot(page, "model-promoted")


def test_a_training_started_from_the_jobs_page_runs_live_and_a_search_sets_its_trials_side_by_side(
    platform: EmbeddedPlatform, context: BrowserContext, pipeline_in_thread: PipelineResult
) -> None:
    pipeline = pipeline_in_thread
    dataset, target = pipeline.dataset_version.dataset_name, pipeline.job.target
    page = context.new_page()
    sign_in(page, platform, platform.api_key)
    page.locator("#nav-jobs").click()
    name = f"console-form-{secrets.token_hex(3)}"
    page.get_by_label("Dataset (its latest version)").select_option(dataset)
    page.get_by_label("Target column").fill(target)
    page.get_by_label("Algorithm").select_option("mlp_regressor")
    page.get_by_label("Model name").fill(name)
    page.get_by_label("Parameters").fill("epochs=60, batch_size=8, early_stopping_patience=0")
    page.locator("#train-submit").click()
    expect(page).to_have_url(re.compile(r"/jobs/job_[a-z0-9_]+$"))
    page.evaluate("window.sameDocument = true")
    expect(page.locator("#job-state")).to_have_text("Succeeded", timeout=120_000)
    assert page.evaluate("window.sameDocument") is True
    log = page.locator("#job-log li")
    expect(log.first).to_be_visible()
    texts = log.all_inner_texts()
    assert any("Started on worker" in x for x in texts) and any("epoch" in x for x in texts), texts
    assert "Completed" in texts[-1], texts
    expect(page.locator("#job-params")).to_contain_text("epochs")

    # A search: one parameter with several values.
    page.locator("#nav-jobs").click()
    page.get_by_label("Dataset (its latest version)").select_option(dataset)
    page.get_by_label("Target column").fill(target)
    page.get_by_label("Algorithm").select_option("ridge")
    page.get_by_label("Model name").fill(name)
    page.get_by_label("Parameters").fill("alpha=0.01|1|100")
    page.locator("#train-submit").click()
    expect(page.locator("#job-state")).to_have_text("Succeeded", timeout=120_000)
    page.reload()  # the trials are the job's own record, read when the page renders
    rows = page.locator("#trials tbody tr")
    expect(rows).to_have_count(3)
    assert sorted(page.locator("#trials tbody tr td:nth-child(2)").all_inner_texts()) == ["0.01", "1", "100"]
    expect(page.locator("#trials tr.best")).to_have_count(1)
    expect(page.locator("svg.chart#trial-scores")).to_be_visible()
    shot(page, "job-search")

    # A bad parameter is refused on the form, with what was typed kept.
    page.locator("#nav-jobs").click()
    page.get_by_label("Dataset (its latest version)").select_option(dataset)
    page.get_by_label("Target column").fill(target)
    page.get_by_label("Algorithm").select_option("ridge")
    page.get_by_label("Parameters").fill("alpha=-3")
    page.locator("#train-submit").click()
    expect(page.locator("#train-error")).to_contain_text("alpha")
    expect(page.get_by_label("Parameters")).to_have_value("alpha=-3")

    # The model's page: the intervals, the champion/challenger decisions and the lineage graph.
    page.goto(f"{platform.console_url}/models/{name}")
    expect(page.locator("#decisions tbody tr").first).to_be_visible()
    expect(page.locator("#intervals")).to_be_visible()
    expect(page.locator("svg.graph#model-lineage")).to_be_visible()
    expect(page.locator(".lineage-steps a", has_text=dataset).first).to_be_visible()
    shot(page, "model-lineage")


def test_the_jobs_and_models_pages_have_no_serious_accessibility_violation(
    platform: EmbeddedPlatform, browser: Browser, pipeline_in_thread: PipelineResult
) -> None:
    pipeline = pipeline_in_thread
    paths = {
        "jobs": "/jobs",
        "job": f"/jobs/{pipeline.job.job_id}",
        "models": "/models",
        "model": f"/models/{pipeline.model_version.model_name}",
    }
    assert_accessible(browser, platform, paths)
