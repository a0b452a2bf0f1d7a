"""The console's monitoring pages in a real browser (Debian's headless Chromium, driven by Playwright)
against the session's platform, whose monitor checks every 2 s: a deployment of this module's own,
calm traffic and then shifted traffic through the SDK, and the drift incident, the drifted features'
histograms and the retraining it asks for appearing on the open page without a reload; the latency
and traffic charts; another tenant; axe-core in both languages. Screenshots go where
tests/test_console_e2e.py puts its own.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import polars as pl
import pytest
from playwright.sync_api import Browser, BrowserContext, expect
from sklearn.datasets import load_diabetes

import lepton_ai as la
from lepton_platform.embedded import EmbeddedPlatform
from tests.test_console_e2e import assert_accessible, context, shot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

__all__ = ["context"]  # the fixture, imported to be used here

SHIFTED = ("bmi", "bp")


class Watched:
    """A Ridge model trained on the diabetes data, and a deployment of its first version that follows no
    alias (the retraining's new version rolls out elsewhere, so the drift stays), named as no other test."""

    def __init__(self, name: str, frame: pl.DataFrame) -> None:
        self.name, self.frame = name, frame

    def send(self, client: la.Client, rows: pl.DataFrame) -> None:
        for chunk in rows.drop("target").iter_slices(32):
            client.deployments.predict(self.name, chunk)


@pytest.fixture(scope="module")
def watched(platform: EmbeddedPlatform) -> Watched:
    model_name = f"console-mon-{secrets.token_hex(3)}"
    name = f"{model_name}-watched"
    frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
    with la.Client(platform.api_key, platform.url) as client:
        dataset = client.datasets.upload(frame, name=model_name, progress=False)
        model = la.models.Ridge(alpha=1.0)
        model.fit(dataset, target="target", model_name=model_name, progress=False)
        client.deployments.deploy(name, model_name, model.version)
        # A rule that cannot fire, for the rules table; a policy that retrains on drift, even on the same data.
        client.monitor.set_rules(
            name, [{"name": "flood", "metric": "requests", "comparison": ">", "threshold": 1e9, "severity": "info"}]
        )
        client.monitor.set_retraining_policy(name, on_drift=True, allow_same_dataset_version=True)
    return Watched(name, frame)


def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def test_shifted_traffic_makes_the_drift_alert_appear_on_the_open_page(
    platform: EmbeddedPlatform, context: BrowserContext, watched: Watched
) -> None:
    client = la.Client(platform.api_key, platform.url)
    # Traffic like the training data, until the monitor has a verdict on it: no drift.
    watched.send(client, watched.frame.sample(640, with_replacement=True, seed=1))

    def calm() -> Any:
        report = client.monitor.drift(watched.name)
        return report if report.features and all(f.verdict != "insufficient_data" for f in report.features) else None

    assert list(wait_for("a drift verdict on calm traffic", calm, 120).drifted) == []

    page = context.new_page()
    sign_in(page, platform, platform.api_key)
    page.locator("#nav-monitoring").click()
    row = page.locator(f'#monitoring tr[data-deployment="{watched.name}"]')
    row.locator("a").click()
    expect(page.locator("h1")).to_contain_text(watched.name)
    bmi = page.locator('#features .feature[data-feature="bmi"]')
    expect(bmi).to_have_attribute("data-verdict", "no_drift")
    expect(page.locator("#monitor-status")).to_contain_text("Live", timeout=20_000)
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    # The world moves: bmi and bp two standard deviations up.
    moved = watched.frame.with_columns([pl.col(c) + 2 * watched.frame[c].std() for c in SHIFTED])
    for _ in range(2):
        watched.send(client, moved.sample(640, seed=3, with_replacement=True))

    incident = page.locator('#incidents li.incident[data-kind="drift"]')
    expect(incident).to_have_count(1, timeout=180_000)
    expect(incident).to_contain_text("Drift detected")
    expect(incident.locator(".badge")).to_have_text("Firing")
    for feature in SHIFTED:
        expect(incident).to_contain_text(feature)
    expect(page.locator("#incidents li.incident").first).to_have_attribute("data-kind", "drift")  # at the top
    # The drifted features' cards, redrawn from the same update: marked in words, not colour alone.
    expect(bmi).to_have_attribute("data-verdict", "drift")
    expect(bmi.locator(".verdict")).to_have_text("Drifted")
    expect(page.locator('#features .feature[data-feature="age"]')).not_to_have_attribute("data-verdict", "drift")
    # The retraining the policy asks for, with its job.
    retraining = page.locator("#retrainings li")
    expect(retraining).to_have_count(1, timeout=120_000)
    job = retraining.locator('a[href^="/jobs/job_"]')
    expect(job).to_have_count(1)
    expect(incident.locator('.retraining a[href^="/jobs/job_"]')).to_have_count(1)
    assert page.evaluate("window.sameDocument") is True

    # Drawn afresh: the charts of the traffic sent, and the reference against the live histograms.
    page.reload()
    for chart in ("svg#latency-chart", "svg#traffic-chart"):
        expect(page.locator(chart)).to_be_visible()
        assert page.locator(chart).evaluate("svg => svg.namespaceURI") == "http://www.w3.org/2000/svg"
    assert page.locator("#latency-chart polyline").count() == 3
    assert page.locator("#traffic-chart rect.bar").count() >= 2  # a swatch and at least one window
    assert "Requests" in (page.locator("#traffic-chart").get_attribute("aria-label") or "")
    histogram = bmi.locator("svg.chart[role=img]")
    expect(histogram).to_be_visible()
    assert histogram.locator("rect.ref").count() == histogram.locator("rect.live").count() >= 10
    assert "largest difference" in (histogram.locator("desc").text_content() or "")
    expect(bmi).to_have_attribute("data-verdict", "drift")
    expect(page.locator('#rules tr[data-rule="flood"]')).to_contain_text("OK")
    expect(page.locator("#triton-figures")).to_be_visible()
    assert platform.api_key not in page.content() and platform.api_key not in page.url
    shot(page, "monitor")
    href = job.first.get_attribute("href")
    job.first.click()  # the retraining's job page
    expect(page).to_have_url(f"{platform.console_url}{href}")
    expect(page.locator("h1")).to_contain_text((href or "").rsplit("/", 1)[-1])

    page.locator("#nav-monitoring").click()
    row = page.locator(f'#monitoring tr[data-deployment="{watched.name}"]')
    expect(row).to_contain_text("bmi")
    assert int(row.locator("td").nth(2).inner_text()) > 0  # requests in the last five minutes
    shot(page, "monitoring")
    client.close()


def test_another_tenant_neither_sees_nor_opens_the_deployment_s_monitoring(
    platform: EmbeddedPlatform, context: BrowserContext, watched: Watched
) -> None:
    page = context.new_page()
    sign_in(page, platform, platform.key_for("intruder"))
    page.goto(f"{platform.console_url}/monitoring")
    expect(page.locator("#whoami")).to_contain_text("intruder")
    assert watched.name not in page.content()
    response = page.goto(f"{platform.console_url}/monitoring/{watched.name}")
    assert response is not None and response.status == 404
    expect(page.locator("svg.chart")).to_have_count(0)
    expect(page.locator("#features, #incidents")).to_have_count(0)
    assert "against live" not in page.content()  # no histogram of it, not even its title
    assert page.request.get(f"{platform.console_url}/monitoring/{watched.name}/stream").status == 404


def test_the_monitoring_pages_have_no_serious_accessibility_violation(
    platform: EmbeddedPlatform, browser: Browser, watched: Watched
) -> None:
    assert_accessible(browser, platform, {"monitoring": "/monitoring", "monitor": f"/monitoring/{watched.name}"})
