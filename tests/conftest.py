"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import pytest_asyncio
from playwright.sync_api import Browser, sync_playwright

from lepton_platform.demo import PipelineResult, run_pipeline, write_diabetes_csv
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.tracesink import TraceSink

_RESULT: dict[str, PipelineResult] = {}


async def _pipeline_once(
    platform: EmbeddedPlatform, trace_sink: TraceSink, tmp_path_factory: pytest.TempPathFactory
) -> PipelineResult:
    if "run" not in _RESULT:
        csv = write_diabetes_csv(tmp_path_factory.mktemp("data") / "diabetes.csv")
        # Its own model name: other tests train on "diabetes" data with the default name too.
        _RESULT["run"] = await run_pipeline(platform, csv, trace_sink, model_name="session-pipeline")
    return _RESULT["run"]


@pytest_asyncio.fixture
async def pipeline(
    platform: EmbeddedPlatform, trace_sink: TraceSink, tmp_path_factory: pytest.TempPathFactory
) -> PipelineResult:
    """Runs the demo's pipeline once per session; later tests (in any module) reuse the result."""
    return await _pipeline_once(platform, trace_sink, tmp_path_factory)


@pytest.fixture
def pipeline_in_thread(
    platform: EmbeddedPlatform, trace_sink: TraceSink, tmp_path_factory: pytest.TempPathFactory
) -> PipelineResult:
    """``pipeline`` for a test that cannot await one (Playwright's sync API holds this thread's event
    loop): the same run, made on a thread and loop of its own when no test has made it yet."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _pipeline_once(platform, trace_sink, tmp_path_factory)).result()


CHROMIUM = "chromium"
"""Debian's Chromium (requirements/debian.txt; make setup installs it). Playwright drives it
through ``executable_path``: no browser is ever downloaded."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Debian Chromium for one test module, driven by Playwright.

    Not for the session: Playwright's sync API keeps an event loop running on the test thread
    while it is open, and every later ``asyncio.run`` on that thread (other modules' tests, the
    async fixtures) would fail. Closed at the module's end, it leaves the thread as it found it.
    """
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
