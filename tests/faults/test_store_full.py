"""A full store (issue 19): the JetStream store runs out of room while uploads arrive, on a platform of this
module's own (no Triton) whose store may hold 96 MB on disk (``max_file_store``), as a full disk would leave it.

Proves: the upload that does not fit is refused at once with RESOURCE_EXHAUSTED saying the store is full
and what an operator does (never UNAVAILABLE, which the SDK would retry for a minute, never INTERNAL);
nothing of it becomes a version; what the store held before is still there and readable; every service
still serves.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_diabetes

import lepton_ai as la
from lepton_platform.embedded import EmbeddedPlatform, grpc_serving

from .store import Loop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

#: The store's room: the topology and a few datasets of :data:`ROWS` rows fit, not twenty.
STORE = "96MB"
ROWS = 100_000


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPlatform]:
    workdir: Path = tmp_path_factory.mktemp("store-full")
    key = secrets.token_urlsafe(16)
    with EmbeddedPlatform(workdir, api_key=key, triton=False, nats_max_file_store=STORE) as platform:
        yield platform


def test_a_full_store_refuses_the_upload_clearly_and_keeps_what_it_held(own: EmbeddedPlatform) -> None:
    """Uploads of random (incompressible) data until the store is full: the one that does not fit is refused
    with RESOURCE_EXHAUSTED at once, is no version, and the datasets stored before it are all readable;
    deleting one of them on the store full to the byte works, and makes room for the next upload."""
    rng = np.random.default_rng(5)
    with la.Client(own.api_key, own.url) as client:
        frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
        kept = client.datasets.upload(frame, name="kept", progress=False)
        stored: list[la.Dataset] = []
        with pytest.raises(la.ResourceExhausted) as refused:
            for i in range(20):
                filler = pl.DataFrame(rng.normal(size=(ROWS, 10)), schema=[f"x{j}" for j in range(10)])
                stored.append(client.datasets.upload(filler, name=f"filler-{i}", progress=False))
        assert "store is full" in str(refused.value) and "frees room" in str(refused.value), refused.value
        assert 1 <= len(stored) < 20
        # Nothing of the refused upload is a version; everything before it is there, whole.
        refused_name = f"filler-{len(stored)}"
        assert refused_name not in {d.name for d in client.datasets.list()}
        for dataset in [kept, *stored]:
            again = client.datasets.get(dataset.version_id)
            assert again.row_count == dataset.row_count
        assert client.datasets.get(kept.version_id).to_polars().equals(frame)
        # Deleting is how an operator makes room, so a store full to the byte still deletes.
        client.datasets.delete(stored[0].name)
        again = client.datasets.upload(frame, name="after-delete", progress=False)
        assert client.datasets.get(again.version_id).to_polars().equals(frame)
    for name, address in own.addresses.items():
        assert grpc_serving(address), f"{name} stopped serving"


def test_a_fit_whose_model_the_store_refuses_fails_at_once_saying_so(own: EmbeddedPlatform) -> None:
    """The artifacts bucket capped by an operator at 1 MB (a stream at its limit), with room left in the
    store (the test above deleted 8 MB) for a job's records: a fit whose model (a 300-tree forest,
    megabytes) the bucket refuses fails within seconds, saying the store is full and what an operator
    does; it ran once (not again and again against a store that refuses alike, nor left running); the
    cap lifted, the same fit succeeds."""
    with la.Client(own.api_key, own.url) as client:
        kept = next(d for d in client.datasets.list() if d.name == "kept")
        dataset = client.datasets.get(kept.latest_version_id)
        nats = Loop(own)
        try:
            config = nats.run(nats.js.stream_info("OBJ_artifacts")).config
            config.max_bytes = 1_000_000
            nats.run(nats.js.update_stream(config))
            started = time.monotonic()
            with pytest.raises(la.FailedPrecondition) as failed:
                la.models.RandomForestRegressor(n_estimators=300).fit(
                    dataset, "target", model_name="forest", progress=False, timeout=120
                )
            took = time.monotonic() - started
            config.max_bytes = -1
            nats.run(nats.js.update_stream(config))
        finally:
            nats.close()
        assert "store is full" in str(failed.value) and "frees room" in str(failed.value), failed.value
        assert took < 60, f"the refused fit took {took:.0f} s to fail"
        (job,) = [j for j in client.jobs.list() if j.model_name == "forest"]
        assert job.attempts == 1, f"the fit was run {job.attempts} times against a full store"
        model = la.models.RandomForestRegressor(n_estimators=30).fit(
            dataset, "target", model_name="forest", progress=False
        )
        assert model.version >= 1
