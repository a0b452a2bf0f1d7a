"""A full store (issue 19): the JetStream store runs out of room while uploads arrive, on a platform of this
module's own (no Triton) whose store may hold 96 MB on disk (``max_file_store``), as a full disk would leave it.

Proves: the upload that does not fit is refused at once with RESOURCE_EXHAUSTED saying the store is full
and what an operator does (never UNAVAILABLE, which the SDK would retry for a minute, never INTERNAL);
nothing of it becomes a version; what the store held before is still there and readable; every service
still serves.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_diabetes

import lepton_ai as la
from lepton_platform.embedded import EmbeddedPlatform, grpc_serving

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
    with RESOURCE_EXHAUSTED at once, is no version, and the datasets stored before it are all readable."""
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
    for name, address in own.addresses.items():
        assert grpc_serving(address), f"{name} stopped serving"
