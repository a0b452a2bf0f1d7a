"""Triton's statistics API through the monitor's client, against the real embedded Triton server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression
from tritonclient.utils import InferenceServerException

import lepton_ml
from lepton_ml import artifacts
from lepton_monitor.triton import triton_statistics
from lepton_platform.processes import TritonServer
from lepton_platform.testing import artifact_keys

pytestmark = pytest.mark.timeout(240)

MODEL = "acme--monitored"


def _load(client: triton_grpc.InferenceServerClient, control: dict[str, str]) -> np.ndarray:  # type: ignore[type-arg]
    data = load_diabetes()
    x = np.asarray(data.data, dtype=np.float64)
    model = LinearRegression().fit(x, data.target)
    signature = {
        "features": list(data.feature_names),
        "target": "progression",
        "task": "regression",
        "algorithm": "linear_regression",
        "input_dtype": "float64",
    }
    config = {
        "name": MODEL,
        "backend": "python",
        "max_batch_size": 64,
        "input": [{"name": "features", "data_type": "TYPE_FP64", "dims": [x.shape[1]]}],
        "output": [{"name": "prediction", "data_type": "TYPE_FP64", "dims": [1]}],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
    }
    sealed = artifacts.seal(artifacts.pack(model, artifacts.Signature(**signature)), artifact_keys().signer())  # type: ignore[arg-type]
    files = {
        "file:1/model.py": (Path(lepton_ml.__file__).parent / "triton_model" / "model.py").read_bytes(),
        f"file:1/{artifacts.ARTIFACT_FILE}": sealed,
    }
    client.load_model(MODEL, headers=control, config=json.dumps(config), files=files, client_timeout=120)
    assert client.is_model_ready(MODEL, "1", client_timeout=10)
    return x


async def test_counts_and_durations_come_from_triton(triton: TritonServer) -> None:
    client = triton_grpc.InferenceServerClient(triton.url)
    try:
        x = _load(client, triton.control.grpc_headers())
        for rows in (x[:3], x[3:8], x[8:9]):
            inp = triton_grpc.InferInput("features", list(rows.shape), "FP64")
            inp.set_data_from_numpy(np.ascontiguousarray(rows))
            client.infer(MODEL, [inp], model_version="1", headers=triton.inference_headers(), client_timeout=30)
        bad = triton_grpc.InferInput("features", [1, x.shape[1]], "FP64")
        bad.set_data_from_numpy(np.full((1, x.shape[1]), np.nan))  # the model answers with an error
        with pytest.raises(InferenceServerException):
            client.infer(MODEL, [bad], model_version="1", headers=triton.inference_headers(), client_timeout=30)
        wrong = triton_grpc.InferInput("features", [1, 9], "FP64")  # Triton refuses the shape itself
        wrong.set_data_from_numpy(np.zeros((1, 9)))
        with pytest.raises(InferenceServerException):
            client.infer(MODEL, [wrong], model_version="1", headers=triton.inference_headers(), client_timeout=30)
    finally:
        client.close()

    # Without the statistics secret Triton says nothing; the monitor's snapshot says why.
    refused = await triton_statistics(triton.url, MODEL, "1", timeout=5)
    assert not refused.reachable and "restricted" in refused.error, refused.error
    stats = await triton_statistics(triton.url, MODEL, "1", timeout=5, credential=triton.statistics)
    assert stats.reachable and stats.error == ""
    # What Triton counts: the model's own error answer (the NaN row) is a success to Triton, and the request
    # Triton refused for its shape never reached the model. Errors are counted from the prediction logs.
    assert (stats.success_count, stats.failure_count, stats.inference_count) == (4, 0, 10)
    assert stats.success_ns > 0 and 0 < stats.mean_ms(stats.success_ns) < 10_000
    # Two hosts, one of them down: the live one's figures, and what the other said.
    both = await triton_statistics(f"{triton.url},127.0.0.1:9", MODEL, "1", timeout=2, credential=triton.statistics)
    assert both.reachable and both.success_count == 4 and both.error.startswith("127.0.0.1:9: ")
    unknown = await triton_statistics(triton.url, "acme--nothing", "1", timeout=5, credential=triton.statistics)
    assert not unknown.reachable and unknown.error
