"""Triton's model control is private (issue 16, item 4), played as an attacker on the embedded platform.

A client that reaches Triton's ports directly, with plain ``tritonclient`` over gRPC or HTTP and
no secret or a wrong one, cannot load a model (with a ``model.py`` of its own: Triton's known
code-execution path), unload one, read the repository index, a model's config or statistics, or
change tracing or logging. Afterwards the deployment is unchanged and still answers as before.
Beside the attacks: only the deployer holds the control secret, the monitor only the statistics
one, and Triton listens on loopback only, with its unrestrictable metrics port off.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from lepton.deployer.v1 import deployer_pb2
from sklearn.datasets import load_diabetes
from tritonclient.utils import InferenceServerException

import lepton_ai as la
from lepton_core.triton_access import CONTROL, GRPC_HEADER_PREFIX, STATISTICS
from lepton_platform.demo import PipelineResult
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.processes import TritonServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

NAME = "triton-private"
WRONG = "x" * 43  # as long as a real secret, so only its value is wrong

_STATE: dict[str, Any] = {}


def _rows() -> pl.DataFrame:
    return pl.from_pandas(load_diabetes(as_frame=True, scaled=False).frame).drop("target").head(5)


def _triton(platform: EmbeddedPlatform) -> TritonServer:
    assert platform.triton is not None
    return platform.triton


def _deployed(platform: EmbeddedPlatform, pipeline: PipelineResult) -> dict[str, Any]:
    """A deployment of the demo's model (made once), with what Triton held for it before any attack.

    The reads use the deployer's secret, so each also shows the right header opens what the
    attacks are refused.
    """
    if not _STATE:
        with la.Client(platform.api_key, url=platform.url) as client:
            d = client.deployments.deploy(NAME, pipeline.model_version.model_name, pipeline.model_version.version)
            predictions = client.deployments.predict(NAME, _rows())
        triton = _triton(platform)
        admin = triton_grpc.InferenceServerClient(triton.url)
        try:
            control = triton.control.grpc_headers()
            _STATE.update(
                deployment=d,
                predictions=predictions,
                config=admin.get_model_config(d.triton_model, headers=control, as_json=True),
                log_settings=admin.get_log_settings(headers=control, as_json=True),
                trace_settings=admin.get_trace_settings(headers=control, as_json=True),
            )
            assert admin.get_inference_statistics(d.triton_model, headers=triton.statistics.grpc_headers())
        finally:
            admin.close()
    return _STATE


def _evil_model(marker: Path) -> bytes:
    """A model.py that, once Triton's Python backend imported it, would leave ``marker`` behind."""
    return (
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n\n"
        "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
    ).encode()


def _evil_config(model: str) -> str:
    """A complete config, so the load would go through if it were let in."""
    tensor = {"data_type": "TYPE_FP64", "dims": [1]}
    return json.dumps(
        {
            "name": model,
            "backend": "python",
            "max_batch_size": 0,
            "input": [{"name": "x", **tensor}],
            "output": [{"name": "y", **tensor}],
            "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        }
    )


def _attacks(client: Any, model: str, marker: Path, headers: dict[str, str] | None) -> dict[str, Callable[[], Any]]:
    """Every restricted call an attacker would try, by name."""
    return {
        "unload_model": lambda: client.unload_model(model, headers=headers),
        "load_model with model.py": lambda: client.load_model(
            model, headers=headers, config=_evil_config(model), files={"file:1/model.py": _evil_model(marker)}
        ),
        "get_model_repository_index": lambda: client.get_model_repository_index(headers=headers),
        "get_model_config": lambda: client.get_model_config(model, headers=headers),
        "get_inference_statistics": lambda: client.get_inference_statistics(model, headers=headers),
        "update_trace_settings": lambda: client.update_trace_settings(
            model, settings={"trace_level": ["TIMESTAMPS"], "trace_rate": "1"}, headers=headers
        ),
        "update_log_settings": lambda: client.update_log_settings(
            settings={"log_verbose_level": 2, "log_info": True}, headers=headers
        ),
        "register_system_shared_memory": lambda: client.register_system_shared_memory(
            "attacker", "/attacker", 64, headers=headers
        ),
    }


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("secret", ["none", "wrong"])
def test_model_control_is_refused_without_the_deployers_secret(
    platform: EmbeddedPlatform, pipeline: PipelineResult, tmp_path: Path, protocol: str, secret: str
) -> None:
    before = _deployed(platform, pipeline)
    d: deployer_pb2.Deployment = before["deployment"]
    triton = _triton(platform)
    if protocol == "grpc":
        client: Any = triton_grpc.InferenceServerClient(triton.url)
        prefix, refused_status = GRPC_HEADER_PREFIX, "StatusCode.UNAVAILABLE"  # Triton 2.51's code for it
    else:
        client = triton_http.InferenceServerClient(f"127.0.0.1:{triton.http_port}")
        prefix, refused_status = "", "403"
    # A wrong secret under each of the platform's header names: neither group lets it in.
    headers = None if secret == "none" else {prefix + CONTROL.key: WRONG, prefix + STATISTICS.key: WRONG}
    marker = tmp_path / "attacker-code-ran"
    let_in: list[str] = []
    try:
        for name, attack in _attacks(client, d.triton_model, marker, headers).items():
            try:
                attack()
                let_in.append(name)
            except InferenceServerException as exc:
                assert str(exc.status()) == refused_status, f"{name}: {exc.status()} {exc.message()}"
                assert "restricted, expecting header" in (exc.message() or ""), f"{name}: {exc.message()}"
    finally:
        client.close()
    assert not let_in, f"Triton let these through without the deployer's secret: {let_in}"
    assert not marker.exists(), "the attacker's model.py ran"
    _assert_unchanged(platform, before)


def _assert_unchanged(platform: EmbeddedPlatform, before: dict[str, Any]) -> None:
    """The deployment, its Triton model and Triton's settings are as they were, and it answers as it did."""
    d: deployer_pb2.Deployment = before["deployment"]
    triton = _triton(platform)
    admin = triton_grpc.InferenceServerClient(triton.url)
    try:
        control = triton.control.grpc_headers()
        assert admin.is_model_ready(d.triton_model, d.triton_version)
        assert admin.get_model_config(d.triton_model, headers=control, as_json=True) == before["config"]
        assert admin.get_log_settings(headers=control, as_json=True) == before["log_settings"]
        assert admin.get_trace_settings(headers=control, as_json=True) == before["trace_settings"]
        index = admin.get_model_repository_index(headers=control, as_json=True).get("models", [])
        assert not [m for m in index if m.get("name") == "attacker"]
    finally:
        admin.close()
    with la.Client(platform.api_key, url=platform.url) as client:
        now = client.deployments.get(NAME)
        np.testing.assert_array_equal(client.deployments.predict(NAME, _rows()), before["predictions"])
    assert (now.state, now.triton_model, now.triton_version, len(now.history)) == (
        d.state,
        d.triton_model,
        d.triton_version,
        len(d.history),
    )


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_only_the_deployer_holds_the_control_secret(platform: EmbeddedPlatform) -> None:
    triton = _triton(platform)
    for path in (triton.control_secret_file, triton.statistics_secret_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(triton.secrets_dir.stat().st_mode) == 0o700
    secrets = {triton.control.secret, triton.statistics.secret}
    holders: dict[str, set[str]] = {}
    for name, process in platform.processes.items():
        env = _environ(process.pid)
        assert not secrets & set(env.values()), f"{name} has a Triton secret's value in its environment"
        prefix = f"LEPTON_{name.upper()}_TRITON_"
        holders[name] = {g for g in ("CONTROL_SECRET_FILE", "STATISTICS_SECRET_FILE") if prefix + g in env}
    assert holders.pop("deployer") == {"CONTROL_SECRET_FILE", "STATISTICS_SECRET_FILE"}
    assert holders.pop("monitor") == {"STATISTICS_SECRET_FILE"}
    assert not any(holders.values()), holders


def _address(hex_address: str) -> str:
    """An address as /proc/net/tcp{,6} writes it (32-bit words in host order), IPv4-mapped ones as IPv4."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return str(ipaddress.IPv4Address(words))
    v6 = ipaddress.IPv6Address(words)
    return str(v6.ipv4_mapped or v6)


def _listening(pid: int) -> list[tuple[str, int]]:
    """The (address, port) of every TCP socket ``pid`` listens on (IPv4 and IPv6), from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                found.append((_address(address), int(port, 16)))
    return found


def test_triton_listens_only_on_loopback_without_metrics(platform: EmbeddedPlatform) -> None:
    triton = _triton(platform)
    # gRPC and HTTP only (no metrics port), both on 127.0.0.1 (Triton's gRPC may take it as ::ffff:127.0.0.1).
    assert sorted(_listening(triton.process.pid)) == sorted(
        [("127.0.0.1", triton.grpc_port), ("127.0.0.1", triton.http_port)]
    )


def test_the_monitor_reads_tritons_statistics_with_its_own_secret(
    platform: EmbeddedPlatform, pipeline: PipelineResult
) -> None:
    """The monitor's legitimate read (Triton's counters beside its own) goes through."""
    _deployed(platform, pipeline)
    deadline = time.monotonic() + 60
    with la.Client(platform.api_key, url=platform.url) as client:
        while True:
            snapshot = client.monitor.metrics(NAME, triton=True).triton
            if snapshot.reachable or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert snapshot.reachable and snapshot.error == "", snapshot.error
