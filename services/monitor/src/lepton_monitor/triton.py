"""Triton's own statistics of a model version, through its statistics API (KServe V2 gRPC extension).

Triton keeps cumulative counts and durations per model version since it was loaded, not percentiles:
the monitor reports them beside the percentiles it computes from its own logs, and Prometheus gets them as
counters (a ``rate()`` in Grafana turns them into per-second figures).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import tritonclient.grpc.aio as triton_aio

from lepton_core.triton_access import TritonCredential, grpc_headers


@dataclass
class TritonSnapshot:
    """Triton's statistics of one model version at one moment.

    Attributes:
        reachable: Whether Triton answered.
        error: Why not, when it did not.
        url: The hosts asked, by their names in the host pool (the address when asked directly).
        model: The Triton model name.
        version: The Triton model version.
        inference_count: Inferences (rows) run.
        execution_count: Model executions (batches).
        success_count: Successful requests.
        failure_count: Failed requests.
        success_ns: Total time of successful requests, nanoseconds.
        queue_ns: Total time requests waited in the queue.
        compute_infer_ns: Total time in the model's execute.
    """

    reachable: bool
    url: str
    model: str
    version: str
    error: str = ""
    inference_count: int = 0
    execution_count: int = 0
    success_count: int = 0
    failure_count: int = 0
    success_ns: int = 0
    queue_ns: int = 0
    compute_infer_ns: int = 0

    def mean_ms(self, total_ns: int) -> float:
        """A total duration divided by the successful requests, in milliseconds (0 without any)."""
        return total_ns / self.success_count / 1e6 if self.success_count else 0.0


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


async def triton_statistics(
    url: str, model: str, version: str, timeout: float, credential: TritonCredential | None = None
) -> TritonSnapshot:
    """Asks Triton for the statistics of ``model`` version ``version``; never raises.

    Args:
        url: Triton's gRPC address (``host:port``), or several, comma-separated (a deployment on several
            hosts): their figures are summed.
        model: The Triton model name.
        version: The model version ("" for every loaded version, summed).
        timeout: Seconds to wait for each host.
        credential: Opens Triton's statistics protocol (lepton_core.triton_access.STATISTICS).

    Returns:
        The snapshot; ``reachable`` when at least one host answered, and ``error`` saying what the others
        (or all) said.
    """
    out = TritonSnapshot(reachable=False, url=url, model=model, version=version)
    hosts = [h.strip() for h in url.split(",") if h.strip()]
    if not hosts or not model:
        out.error = "no Triton address or model known for this deployment"
        return out
    errors: list[str] = []
    for host in hosts:
        found = await _host_statistics(host, model, version, timeout, grpc_headers(credential))
        if isinstance(found, str):
            errors.append(f"{host}: {found}" if len(hosts) > 1 else found)
            continue
        out.reachable = True
        for entry in found:
            inference = entry.get("inference_stats") or {}
            out.inference_count += _int(entry.get("inference_count"))
            out.execution_count += _int(entry.get("execution_count"))
            out.success_count += _int((inference.get("success") or {}).get("count"))
            out.failure_count += _int((inference.get("fail") or {}).get("count"))
            out.success_ns += _int((inference.get("success") or {}).get("ns"))
            out.queue_ns += _int((inference.get("queue") or {}).get("ns"))
            out.compute_infer_ns += _int((inference.get("compute_infer") or {}).get("ns"))
    out.error = "; ".join(errors)
    return out


async def _host_statistics(
    host: str, model: str, version: str, timeout: float, headers: dict[str, str] | None
) -> list[dict[str, Any]] | str:
    """One host's ``model_stats`` entries, or why there are none."""
    client = triton_aio.InferenceServerClient(host)
    try:
        stats = await asyncio.wait_for(
            client.get_inference_statistics(model, version, headers=headers, as_json=True, client_timeout=timeout),
            timeout + 0.5,
        )
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        try:
            await client.close()
        except Exception:
            pass
    found: list[dict[str, Any]] = (stats or {}).get("model_stats") or []
    return found or f"Triton has no statistics for {model} version {version or '(any)'}"


__all__ = ["TritonSnapshot", "triton_statistics"]
