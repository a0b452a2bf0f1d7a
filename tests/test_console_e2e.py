"""The web console in a real browser (Debian's headless Chromium, driven by Playwright) against
the session's platform: sign in, the datasets and a dataset's profile, the live event tail,
Chinese and back, another tenant, a wrong key, signing out. Issue 18's first pages.

Each page's screenshot is saved to ``build/screenshots/console/`` (docs/console.md shows them).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

import lepton_ai as la
from lepton_platform.embedded import EmbeddedPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "build" / "screenshots" / "console"
AXE = ROOT / "build" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
"""axe-core, fetched by make setup (tools/npm_fetch.py, pinned in tools/axe/package-lock.json)."""
VIEWPORT = {"width": 1366, "height": 768}
"""A laptop screen: what the issue asks the pages to be readable on."""


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) for each test."""
    ctx = browser.new_context(viewport=VIEWPORT, locale="en-US")  # type: ignore[arg-type]
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


def sign_in(page: Page, platform: EmbeddedPlatform, key: str) -> None:
    page.goto(f"{platform.console_url}/")
    expect(page).to_have_url(f"{platform.console_url}/signin")
    page.get_by_label("API key").fill(key)
    page.locator("#signin button[type=submit]").click()


@pytest.fixture(scope="module")
def marked(platform: EmbeddedPlatform, tmp_path_factory: pytest.TempPathFactory) -> la.Dataset:
    """A dataset of the platform's tenant with a name no other test uses."""
    path = tmp_path_factory.mktemp("console") / "console.csv"
    pl.DataFrame(
        {"age": [float(20 + i % 50) for i in range(300)], "income": [1000.0 * i for i in range(300)]}
    ).write_csv(path)
    with la.Client(platform.api_key, platform.url) as client:
        return client.datasets.upload(path, f"console-{secrets.token_hex(3)}", progress=False)


def test_sign_in_see_the_datasets_and_a_profile_then_sign_out(
    platform: EmbeddedPlatform, context: BrowserContext, marked: la.Dataset
) -> None:
    page = context.new_page()
    sign_in(page, platform, "lep_not-a-key-at-all-0000000000000000")
    expect(page.locator("#signin-error")).to_be_visible()
    assert "datasets" not in page.url
    shot(page, "signin-refused")

    sign_in(page, platform, platform.api_key)
    page.locator("#nav-datasets").click()
    expect(page.locator(f'#datasets tr[data-dataset="{marked.name}"]')).to_be_visible()
    expect(page.locator("#whoami")).to_contain_text(platform.tenant)
    page.locator("#dataset-search").fill(marked.name)
    page.locator("#dataset-search").press("Enter")
    expect(page.locator("#datasets tbody tr")).to_have_count(1)
    shot(page, "datasets")

    page.locator(f'#datasets tr[data-dataset="{marked.name}"] a').first.click()
    expect(page.locator("#schema")).to_contain_text("income")
    charts = page.locator("svg.chart[role=img]")
    expect(charts.first).to_be_visible()
    assert charts.count() >= 2  # a histogram per numeric column
    assert "income" in (charts.nth(1).get_attribute("aria-label") or "") + (
        charts.first.get_attribute("aria-label") or ""
    )
    shot(page, "dataset")

    # The key is in no URL, page or cookie the browser holds.
    assert platform.api_key not in page.url and platform.api_key not in page.content()
    assert all(platform.api_key not in c["value"] for c in context.cookies())

    page.locator("#signout").click()
    expect(page).to_have_url(f"{platform.console_url}/signin")
    page.goto(f"{platform.console_url}/datasets")
    expect(page).to_have_url(f"{platform.console_url}/signin")  # signed out: no page without signing in again


def test_the_event_tail_shows_a_new_dataset_without_reloading(
    platform: EmbeddedPlatform, context: BrowserContext, tmp_path: Path
) -> None:
    page = context.new_page()
    sign_in(page, platform, platform.api_key)
    page.locator("#nav-events").click()
    page.locator("#event-filter").fill("dataset.version")
    name = f"live-{secrets.token_hex(3)}"
    pl.DataFrame({"x": [1.0, 2.0, 3.0]}).write_csv(csv := tmp_path / "live.csv")
    with la.Client(platform.api_key, platform.url) as client:
        uploaded = client.datasets.upload(csv, name, progress=False)
    events = page.locator("#events li.event")
    arrived = events.filter(has_text=uploaded.version_id)
    expect(arrived.first).to_be_visible(timeout=20_000)
    assert arrived.first.get_attribute("data-name") == "dataset.version.created"
    # The filter shows only the types it names: the dataset's own "created" event is there, hidden.
    created = events.filter(has_text=uploaded.id)
    expect(created.first).to_be_hidden()
    page.locator("#event-filter").fill("")
    expect(created.first).to_be_visible()
    page.locator("#event-filter").fill("dataset.version")
    shot(page, "events")


def test_chinese_is_chosen_in_the_page_remembered_and_switched_back(
    platform: EmbeddedPlatform, context: BrowserContext, marked: la.Dataset
) -> None:
    page = context.new_page()
    sign_in(page, platform, platform.api_key)
    page.locator("#nav-datasets").click()
    english = page.locator("#nav-datasets").inner_text()
    page.locator("#lang-switch").click()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    chinese = page.locator("#nav-datasets").inner_text()
    assert chinese != english and any("\u4e00" <= ch <= "\u9fff" for ch in chinese), chinese
    page.reload()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")  # remembered
    shot(page, "datasets-zh")
    page.locator(f'#datasets tr[data-dataset="{marked.name}"] a').first.click()
    shot(page, "dataset-zh")
    page.locator("#lang-switch").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert page.locator("#nav-datasets").inner_text() == english


def test_another_tenant_sees_none_of_the_first_tenant_s_objects(
    platform: EmbeddedPlatform, context: BrowserContext, marked: la.Dataset
) -> None:
    page = context.new_page()
    sign_in(page, platform, platform.key_for("intruder"))
    page.locator("#nav-datasets").click()
    expect(page.locator("#whoami")).to_contain_text("intruder")
    assert marked.name not in page.content()
    response = page.goto(f"{platform.console_url}/datasets/{marked.name}")
    assert response is not None and response.status == 404
    # Nothing of the dataset: no schema, no chart, none of its column names.
    expect(page.locator("#schema")).to_have_count(0)
    expect(page.locator("svg.chart")).to_have_count(0)
    assert "income" not in page.content()


def test_no_page_has_a_serious_or_critical_accessibility_violation(
    platform: EmbeddedPlatform, browser: Browser, marked: la.Dataset, tmp_path: Path
) -> None:
    """axe-core runs in each page (English and Chinese); what it calls serious or critical fails the test."""
    assert AXE.is_file(), "axe-core is missing: run make setup (tools/npm_fetch.py)"
    ctx = browser.new_context(viewport=VIEWPORT, locale="en-US")  # type: ignore[arg-type]
    ctx.add_init_script(path=str(AXE))  # before the page's own scripts, as the browser's, not the page's
    try:
        page = ctx.new_page()
        page.goto(f"{platform.console_url}/signin")
        pages = {"signin": page.url}
        sign_in(page, platform, platform.api_key)
        pages |= {
            "datasets": f"{platform.console_url}/datasets",
            "dataset": f"{platform.console_url}/datasets/{marked.name}",
            "events": f"{platform.console_url}/events",
        }
        found = violations_in_both_languages(page, {k: v for k, v in pages.items() if k not in ("signin", "events")})
        found |= events_page_violations(page, platform, tmp_path)
        page.locator("#signout").click()
        found["signin"] = axe_violations(page)
        bad = {where: v for where, v in found.items() if v}
        assert not bad, f"serious or critical accessibility violations: {bad}"
    finally:
        ctx.close()


def assert_accessible(browser: Browser, platform: EmbeddedPlatform, paths: dict[str, str]) -> None:
    """axe-core in each page (name: path), signed in as the platform's key, in English and Chinese (each
    screenshotted in Chinese): no serious or critical violation."""
    assert AXE.is_file(), "axe-core is missing: run make setup (tools/npm_fetch.py)"
    ctx = browser.new_context(viewport=VIEWPORT, locale="en-US")  # type: ignore[arg-type]
    ctx.add_init_script(path=str(AXE))  # before the page's own scripts, as the browser's, not the page's
    try:
        page = ctx.new_page()
        sign_in(page, platform, platform.api_key)
        pages = {name: f"{platform.console_url}{path}" for name, path in paths.items()}
        found = violations_in_both_languages(page, pages, shots=True)
        bad = {where: v for where, v in found.items() if v}
        assert not bad, f"serious or critical accessibility violations: {bad}"
    finally:
        ctx.close()


def events_page_violations(page: Page, platform: EmbeddedPlatform, tmp_path: Path) -> dict[str, list[str]]:
    """axe on the events page with its list full enough to scroll (what keyboard users must reach), in
    both languages: fresh uploads fill it, whatever else the session has published."""
    csv = tmp_path / "fill.csv"
    csv.write_text("a\n1\n")
    with la.Client(platform.api_key, platform.url) as client:
        for _ in range(12):  # two events each: dataset.created, dataset.version.created
            client.datasets.upload(csv, f"console-fill-{secrets.token_hex(3)}", progress=False)
    found: dict[str, list[str]] = {}
    for lang in ("en", "zh"):
        page.goto(f"{platform.console_url}/events")
        expect(page.locator("#events li").nth(23)).to_be_attached()
        assert page.locator("#events").evaluate("list => list.scrollHeight > list.clientHeight")
        found[f"events ({lang})"] = axe_violations(page)
        page.locator("#lang-switch").click()
    return found


def violations_in_both_languages(page: Page, pages: dict[str, str], shots: bool = False) -> dict[str, list[str]]:
    """:func:`axe_violations` of each of ``pages`` (name: URL), in English then in Chinese (switched in
    the page), keyed ``"name (lang)"``; with ``shots``, a screenshot of each in Chinese (``name-zh``)."""
    found: dict[str, list[str]] = {}
    for lang in ("en", "zh"):
        for name, url in pages.items():
            page.goto(url)
            found[f"{name} ({lang})"] = axe_violations(page)
            if shots and lang == "zh":
                shot(page, f"{name}-zh")
        page.locator("#lang-switch").click()
    return found


def axe_violations(page: Page) -> list[str]:
    """axe-core's serious and critical violations in ``page``: ``id (impact): help, N nodes``."""
    violations = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
            .map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length}))"""
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']}, {v['nodes']} nodes"
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]


def test_a_csv_uploads_from_the_page_with_its_progress_and_a_bad_file_is_refused_in_place(
    platform: EmbeddedPlatform, context: BrowserContext, tmp_path: Path
) -> None:
    name = f"console-upload-{secrets.token_hex(3)}"
    csv = tmp_path / "households.csv"
    pl.DataFrame(
        {"rooms": [float(1 + i % 7) for i in range(20_000)], "value": [i * 1.5 for i in range(20_000)]}
    ).write_csv(csv)
    page = context.new_page()
    sign_in(page, platform, platform.api_key)
    # Every status the page shows is logged to the console, so the test sees the bar move on a fast loopback too.
    shown: list[str] = []
    page.on("console", lambda message: shown.append(message.text))
    page.add_init_script(
        "new MutationObserver(() => { const s = document.getElementById('upload-status');"
        " if (s && s.textContent) console.debug(s.textContent); })"
        ".observe(document, {subtree: true, childList: true, characterData: true});"
    )
    page.goto(f"{platform.console_url}/datasets")
    page.get_by_label("Dataset name").fill(name)
    page.get_by_label("File (CSV, Parquet, JSON lines or Arrow)").set_input_files(str(csv))
    page.locator("#upload-submit").click()
    expect(page).to_have_url(f"{platform.console_url}/datasets/{name}")
    expect(page.locator("#dataset-name")).to_have_text(name)
    with la.Client(platform.api_key, platform.url) as client:
        assert client.datasets.get(name).row_count == 20_000
    assert any(s.startswith("Sending") for s in shown) and "Sent; the platform is checking and profiling it…" in shown

    page.goto(f"{platform.console_url}/datasets")
    page.evaluate("window.sameDocument = true")
    bad = tmp_path / "notes.docx"
    bad.write_bytes(b"not a table")
    page.get_by_label("File (CSV, Parquet, JSON lines or Arrow)").set_input_files(str(bad))
    page.locator("#upload-submit").click()
    expect(page.locator("#upload-error")).to_contain_text("cannot tell its format from its name")
    assert page.evaluate("window.sameDocument") is True  # refused in place, nothing reloaded
    expect(page.locator("#upload-submit")).to_be_enabled()
    shot(page, "datasets-upload-refused")
