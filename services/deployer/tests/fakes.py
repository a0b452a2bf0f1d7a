"""In-memory stand-ins for the deployer's I/O, for unit tests of its rollout state machine.

:class:`FakeTriton` is a :class:`~lepton_deployer.hosts.HostFactory` over Triton hosts that
live in a dict: each load request's files are turned back into the bundle they carry, so a
loaded version answers with its own model's predictions, as a real Triton does. A test tells
it which faults to show. :class:`MemoryObjects` stands in for the object store and
:class:`RecordingStore` keeps every record written, so a test can read the sequence of
routes a rollout went through.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from lepton_core.bus import ObjectRefRecord
from lepton_core.errors import NotFound
from lepton_core.store import MemoryStore, R
from lepton_deployer.errors import HostError, MalformedAnswer
from lepton_ml import artifacts
from lepton_platform.testing import artifact_keys

UNAVAILABLE = "StatusCode.UNAVAILABLE"
INTERNAL = "StatusCode.INTERNAL"


@dataclass
class Load:
    """A load request a host received."""

    url: str
    model: str
    versions: list[int]
    config: dict[str, Any]
    files: dict[str, bytes]


@dataclass
class Inference:
    """An inference request a host received."""

    url: str
    model: str
    version: str
    rows: int
    parameters: dict[str, str]


@dataclass
class FakeTriton:
    """Every Triton host of a test, in memory. Call it with an address to connect to one.

    Faults it shows when told to:

    - ``refuse_loads[url]``: that host refuses every load with this message (what it serves stays);
    - ``never_ready``: models (by name) that load but never report ready;
    - ``answers[url]``: that host answers inferences ``"wrong"`` (off by 1) or ``"empty"``
      (an output tensor without data: a Python backend built for another numpy);
    - ``failed_requests[(url, model)]``: the failure count Triton's statistics report;
    - ``unreachable``: hosts that answer nothing (as tritonclient reports a refused connection);
    - ``hold_loads``: when set, every load waits for this event (``load_started`` is set first).
    """

    models: dict[str, dict[str, dict[int, dict[str, bytes]]]] = field(default_factory=dict)
    loads: list[Load] = field(default_factory=list)
    unloads: list[tuple[str, str]] = field(default_factory=list)
    inferences: list[Inference] = field(default_factory=list)
    statistics_read: list[tuple[str, str, str]] = field(default_factory=list)
    refuse_loads: dict[str, str] = field(default_factory=dict)
    never_ready: set[str] = field(default_factory=set)
    answers: dict[str, Literal["wrong", "empty"]] = field(default_factory=dict)
    failed_requests: dict[tuple[str, str], int] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)
    hold_loads: asyncio.Event | None = None
    load_started: asyncio.Event = field(default_factory=asyncio.Event)
    opened: int = 0
    closed: int = 0
    _bundles: dict[bytes, artifacts.Bundle] = field(default_factory=dict)

    def __call__(self, url: str) -> FakeHost:
        self.opened += 1
        return FakeHost(self, url)

    def serving(self, url: str) -> dict[str, list[int]]:
        """What ``url`` has loaded: model -> versions."""
        return {model: sorted(versions) for model, versions in self.models.get(url, {}).items()}

    def loads_of(self, url: str) -> list[tuple[str, list[int]]]:
        """The loads ``url`` received, as ``(model, versions)``."""
        return [(load.model, load.versions) for load in self.loads if load.url == url]

    def bundle(self, files: dict[str, bytes]) -> artifacts.Bundle:
        """The model a version's files serve: read, as the serving model reads it, from the signed artifact."""
        signed = files[artifacts.ARTIFACT_FILE]
        key = hashlib.sha256(signed).digest()
        if key not in self._bundles:
            self._bundles[key] = artifacts.load_bundle(signed, artifact_keys().trusted())
        return self._bundles[key]


class FakeHost:
    """One connection to a :class:`FakeTriton` host (a :class:`~lepton_deployer.hosts.TritonHost`)."""

    def __init__(self, triton: FakeTriton, url: str) -> None:
        self._triton = triton
        self._url = url

    @property
    def url(self) -> str:
        return self._url

    def _reach(self) -> dict[str, dict[int, dict[str, bytes]]]:
        if self._url in self._triton.unreachable:
            raise HostError(self._url, "failed to connect to all addresses; connection refused", UNAVAILABLE)
        return self._triton.models.setdefault(self._url, {})

    def _version(self, model: str, version: str) -> dict[str, bytes]:
        loaded = self._reach().get(model, {})
        if not loaded or (version and int(version) not in loaded):
            raise HostError(self._url, f"Request for unknown model: '{model}' version {version} is not found", INTERNAL)
        return loaded[int(version) if version else max(loaded)]

    async def load(self, model: str, config: str, files: Mapping[str, bytes], timeout: float) -> None:
        models = self._reach()
        parsed = json.loads(config)
        versions = list(parsed["version_policy"]["specific"]["versions"])
        self._triton.loads.append(Load(self._url, model, versions, parsed, dict(files)))
        self._triton.load_started.set()
        if self._triton.hold_loads is not None:
            await self._triton.hold_loads.wait()
        refusal = self._triton.refuse_loads.get(self._url)
        if refusal is not None:
            raise HostError(self._url, refusal, INTERNAL)
        by_version: dict[int, dict[str, bytes]] = {v: {} for v in versions}
        for key, data in files.items():
            version, name = key.removeprefix("file:").split("/", 1)
            if name != "model.py":
                by_version[int(version)][name] = data
        models[model] = by_version

    async def unload(self, model: str) -> None:
        models = self._reach()
        self._triton.unloads.append((self._url, model))
        models.pop(model, None)

    async def is_ready(self, model: str, version: str = "") -> bool:
        loaded = self._reach().get(model, {})
        if model in self._triton.never_ready or not loaded:
            return False
        return not version or int(version) in loaded

    async def infer(
        self,
        model: str,
        version: str,
        rows: pl.DataFrame,
        feature_columns: Sequence[str],
        text_columns: Sequence[str],
        parameters: Mapping[str, str],
    ) -> npt.NDArray[np.float64]:
        files = self._version(model, version)
        self._triton.inferences.append(Inference(self._url, model, version, rows.height, dict(parameters)))
        answer = self._triton.answers.get(self._url)
        if answer == "empty":
            try:  # what reading a tensor without data says
                np.frombuffer(b"", dtype=np.float64).reshape(rows.height, 1)
            except ValueError as exc:
                raise MalformedAnswer(str(exc)) from exc
        predictions = np.asarray(self._triton.bundle(files).predict(rows), dtype=np.float64).reshape(-1)
        return predictions + 1.0 if answer == "wrong" else predictions

    async def statistics(self, model: str, version: str = "") -> list[dict[str, Any]]:
        self._triton.statistics_read.append((self._url, model, version))
        self._version(model, version)
        loaded = self._reach()[model]
        failed = self._triton.failed_requests.get((self._url, model), 0)
        return [
            {
                "name": model,
                "version": str(v),
                "inference_count": 0,
                "execution_count": 0,
                "inference_stats": {"success": {"count": 0, "ns": 0}, "fail": {"count": failed, "ns": 0}},
            }
            for v in sorted(loaded)
            if not version or v == int(version)
        ]

    async def close(self) -> None:
        self._triton.closed += 1


class MemoryObjects:
    """The object store in a dict, keyed by digest (:class:`lepton_core.bus.ObjectStore`'s ``put`` and ``get``)."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    async def put(self, bucket: str, name: str, data: bytes) -> ObjectRefRecord:
        digest = hashlib.sha256(data).hexdigest()
        self._data[digest] = data
        return ObjectRefRecord(bucket=bucket, name=name, digest=digest, size=len(data))

    async def get(self, ref: ObjectRefRecord) -> bytes:
        if ref.digest not in self._data:
            raise NotFound(f"object {ref.bucket}/{ref.name} does not exist")
        return self._data[ref.digest]


class RecordingStore(MemoryStore[R]):
    """A :class:`~lepton_core.store.MemoryStore` that keeps a copy of every record ``put``."""

    def __init__(self, model: type[R]) -> None:
        super().__init__(model)
        self.writes: list[R] = []

    async def put(self, key: str, value: R) -> int:
        self.writes.append(value.model_copy(deep=True))
        return await super().put(key, value)
