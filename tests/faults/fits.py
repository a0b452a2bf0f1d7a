"""SDK fits in flight, for the fault tests that kill a process under them."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import lepton_ai as la
from lepton_platform.embedded import EmbeddedPlatform


def fits_in_flight(
    platform: EmbeddedPlatform, version_id: str, names: list[str], epochs: int
) -> list[Future[la.models.Model]]:
    """One MLP fit a name, each on its own thread and client, long enough to be cut in the middle (the
    trainer runs one while the others queue)."""

    def fit(name: str) -> la.models.Model:
        with la.Client(platform.api_key, platform.url) as client:
            model = la.models.MLP(epochs=epochs, batch_size=8, early_stopping_patience=0)
            return model.fit(client.datasets.get(version_id), "target", model_name=name, progress=False)

    pool = ThreadPoolExecutor(len(names))
    futures = [pool.submit(fit, name) for name in names]
    pool.shutdown(wait=False)
    return futures


def wait_running(platform: EmbeddedPlatform, names: list[str], timeout: float = 60) -> None:
    """Until one of the named models' jobs runs, so a kill cuts a fit in the middle."""
    deadline = time.monotonic() + timeout
    with la.Client(platform.api_key, platform.url) as client:
        while time.monotonic() < deadline:
            if set(names) & {j.model_name for j in client.jobs.list(state="running")}:
                return
            time.sleep(0.1)
    raise AssertionError(f"none of {names} started within {timeout} s")
