"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import pytest
import pytest_asyncio

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
