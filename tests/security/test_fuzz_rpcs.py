"""Fuzz every RPC of the platform with Hypothesis, from the service descriptors (issue 15).

Three tests, each over every RPC: fully random requests, valid requests with one field broken,
and UploadDataset streams of garbage. Each sends ``LEPTON_FUZZ_EXAMPLES`` examples per RPC
(default 5: the whole module fits ``make test``), checks that every service is still SERVING
after each RPC's batch, collects every finding and fails once at the end with all of them.
``LEPTON_FUZZ_SEED`` replays a run (the seed is printed; ``random`` draws one). The fuzz calls
as its own tenant, ``fuzzer``, so what it creates stays out of every other test's view.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

import lepton_ai as la
from lepton_platform.embedded import EmbeddedPlatform

from .fuzz import (
    VALID,
    Caller,
    Fuzzer,
    Probes,
    Rpc,
    Seed,
    broken_requests,
    build,
    cut,
    not_serving,
    random_requests,
    requests_of,
    rpcs,
    sweep,
    upload_streams,
)

EXAMPLES = int(os.environ.get("LEPTON_FUZZ_EXAMPLES", "5"))
"""Examples per RPC per test; ``make fuzz`` raises it."""
_SEED = os.environ.get("LEPTON_FUZZ_SEED", "20261206")
SEED = random.randrange(2**32) if _SEED == "random" else int(_SEED)
"""The same requests every ``make test`` (a finding is never luck); ``make fuzz`` draws a new one."""

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600 + 120 * EXAMPLES)]

RPCS = rpcs()
BY_LABEL = {r.label: r for r in RPCS}


def _csv(rows: int = 60) -> bytes:
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    y = 3 * x1 - 2 * x2 + rng.normal(scale=0.1, size=rows)
    lines = ["x1,x2,y", *(f"{a:.4f},{b:.4f},{c:.4f}" for a, b, c in zip(x1, x2, y, strict=True))]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def caller(platform: EmbeddedPlatform) -> Iterator[Caller]:
    c = Caller(platform.addresses, platform.key_for("fuzzer"))
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def seeded(platform: EmbeddedPlatform, caller: Caller, tmp_path_factory: pytest.TempPathFactory) -> Seed:
    """A dataset, a trained linear model and a deployment of it: real ids for valid requests."""
    path = tmp_path_factory.mktemp("fuzz") / "fuzz-seed.csv"
    csv = _csv()
    path.write_bytes(csv)
    client = la.Client(platform.key_for("fuzzer"), platform.url)
    dataset = client.datasets.upload(path, name="fuzz-seed", progress=False)
    model = la.models.LinearRegression().fit(dataset, target="y", model_name="fuzz-model", progress=False)
    seed = Seed(
        dataset_id=dataset.id,
        dataset_name=dataset.name,
        version_id=dataset.version_id,
        columns=list(dataset.columns),
        target="y",
        job_id=model.job_id,
        algorithm=model.algorithm,
        model_name=model.model_name,
        model_version=model.version,
        deployment="fuzz-serve",
        alias="fuzz-champion",
        csv=csv,
    )
    unary = _unary(caller, seed)
    unary("SetAlias", {"model_name": seed.model_name, "alias": seed.alias, "version": seed.model_version})
    version = unary("GetModelVersion", {"model_name": seed.model_name, "version": seed.model_version})
    seed.plots = list(version.plots) if version else []
    evaluation = unary("GetEvaluation", {"training_job_id": seed.job_id})
    seed.evaluation_id = evaluation.evaluation_id if evaluation else ""
    deploy = {"name": seed.deployment, "model_name": seed.model_name, "version": seed.model_version, "wait": True}
    unary("Deploy", deploy, timeout=180)
    return seed


def _unary(caller: Caller, seed: Seed) -> Callable[..., Any]:
    def call(method: str, values: dict[str, Any], timeout: float = 30) -> Any:
        rpc = next(r for r in RPCS if r.method == method)
        out = caller.call(rpc, build(rpc.request, values), timeout=timeout)
        if out.code.name != "OK":
            print(f"seeding: {method} -> {out.code.name} {out.details[:200]}")
            return None
        return out.responses[0]

    return call


@pytest.fixture
def fuzzer(platform: EmbeddedPlatform, caller: Caller, seeded: Seed) -> Fuzzer:
    return Fuzzer(caller, Probes(caller, BY_LABEL), secrets=(platform.api_key, *platform.extra_api_keys))


def _examples(
    strategy: st.SearchStrategy[Any], body: Callable[[Any], None], n: int = EXAMPLES, explicit: Sequence[Any] = ()
) -> None:
    """Runs ``body`` on ``explicit`` then ``n`` examples of ``strategy``; no shrinking (the fuzzer never raises)."""

    def run(example: Any) -> None:
        body(example)

    test = given(strategy)(run)
    for value in reversed(explicit):
        test = example(value)(test)
    test = settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(test)
    hypothesis_seed(SEED)(test)()


def _after_batch(fuzzer: Fuzzer, platform: EmbeddedPlatform, rpc: Rpc) -> None:
    for down in not_serving(platform.addresses):
        fuzzer.record(rpc, "(health after batch)", "service not SERVING", down, None)


def _finish(fuzzer: Fuzzer, name: str, started: float) -> None:
    print(f"\n[{name}] seed={SEED} examples/RPC={EXAMPLES} RPCs={len(RPCS)} {time.monotonic() - started:.0f} s")
    print(fuzzer.report())
    assert not fuzzer.findings, f"{len(fuzzer.findings)} distinct findings (seed {SEED}):\n{fuzzer.report()}"


def test_random_requests_to_every_rpc(platform: EmbeddedPlatform, seeded: Seed, fuzzer: Fuzzer) -> None:
    started = time.monotonic()
    for rpc in RPCS:
        if rpc.client_streaming:
            continue  # test_upload_streams sends streams

        def body(values: dict[str, Any], rpc: Rpc = rpc) -> None:
            fuzzer.send(rpc, "(random)", values, build(rpc.request, values))

        _examples(random_requests(rpc, seeded), body)
        _after_batch(fuzzer, platform, rpc)
    _finish(fuzzer, "random", started)


def test_valid_requests_with_one_field_broken(platform: EmbeddedPlatform, seeded: Seed, fuzzer: Fuzzer) -> None:
    """Every field of every valid request set to each of its worst values (the sweep), then random breaks."""
    started = time.monotonic()
    missing = [r.label for r in RPCS if not r.client_streaming and r.method not in VALID]
    assert not missing, f"no valid request in fuzz.VALID for {missing}"
    for rpc in RPCS:
        if rpc.client_streaming:
            continue

        def body(example: tuple[str, Any, dict[str, Any]], rpc: Rpc = rpc) -> None:
            path, value, values = example
            fuzzer.send(rpc, path, value, build(rpc.request, values))

        _examples(broken_requests(rpc, seeded), body, explicit=sweep(rpc, seeded))
        _after_batch(fuzzer, platform, rpc)
    _finish(fuzzer, "one field broken", started)


def test_upload_streams_of_garbage(platform: EmbeddedPlatform, seeded: Seed, fuzzer: Fuzzer) -> None:
    started = time.monotonic()
    streaming = [r for r in RPCS if r.client_streaming]
    assert streaming, "the descriptors name no client-streaming RPC"
    for rpc in streaming:

        def body(example: tuple[str, Any, list[dict[str, Any]]], rpc: Rpc = rpc) -> None:
            kind, value, stream = example
            fuzzer.send(rpc, f"stream: {kind}", cut(value), requests_of(rpc, stream))

        _examples(upload_streams(rpc, seeded), body, n=max(EXAMPLES * 5, 15))
        _after_batch(fuzzer, platform, rpc)
    _finish(fuzzer, "upload streams", started)
