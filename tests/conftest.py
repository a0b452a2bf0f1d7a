"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
import pytest_asyncio
from playwright.sync_api import Browser, sync_playwright

from lepton_platform.demo import PipelineResult, run_pipeline, write_diabetes_csv
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.tracesink import TraceSink

_RESULT: dict[str, PipelineResult] = {}


@pytest_asyncio.fixture
async def pipeline(
    platform: EmbeddedPlatform, trace_sink: TraceSink, tmp_path_factory: pytest.TempPathFactory
) -> PipelineResult:
    """Runs the demo's pipeline once per session; later tests (in any module) reuse the result."""
    if "run" not in _RESULT:
        csv = write_diabetes_csv(tmp_path_factory.mktemp("data") / "diabetes.csv")
        # Its own model name: other tests train on "diabetes" data with the default name too.
        _RESULT["run"] = await run_pipeline(platform, csv, trace_sink, model_name="session-pipeline")
    return _RESULT["run"]


CHROMIUM = "chromium"
"""Debian's Chromium (requirements/debian.txt; make setup installs it). Playwright drives it
through ``executable_path``: no browser is ever downloaded."""


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """A headless Debian Chromium for the session, driven by Playwright."""
    executable = shutil.which(CHROMIUM)
    assert executable, "Debian's chromium is not installed: run make setup (tools/system_packages.sh)"
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    with sync_playwright() as playwright:
        # As root (CI here) Chromium refuses its sandbox; the pages it opens are the platform's own.
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()
