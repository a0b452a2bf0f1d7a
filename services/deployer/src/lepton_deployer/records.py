"""What the deployer keeps: deployment records and the versions it learned of, in the KV ``deployments``.

:class:`Records` is the deployer's access to them: typed reads, saves that stamp
``updated_at``, and one lock per deployment that a rollout holds from start to end.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from lepton_core.bus import ObjectRefRecord
from lepton_core.errors import InvalidArgument, NotFound
from lepton_core.names import shown
from lepton_core.store import Store
from lepton_core.wire import now
from lepton_ml import serving

INPUT_NAME = serving.INPUT
TEXT_INPUT_NAME = serving.TEXT_INPUT
OUTPUT_NAME = serving.OUTPUT
MAX_HISTORY = 20
STRATEGIES = ("all_at_once", "canary")
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
BACKENDS = ("auto", "python", "onnx")
#: Bounds of a :class:`ServingConfig` (Deploy refuses values outside them).
MAX_BATCH_SIZE = 4096
MAX_PREFERRED_BATCH_SIZES = 16
MAX_QUEUE_DELAY_US = 10_000_000
MAX_INSTANCE_COUNT = 64
MAX_LOG_PER_S = 1_000_000.0


class DeploymentState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    ROLLING_OUT = "rolling_out"


class ServingConfig(BaseModel):
    max_batch_size: int = 64
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_delay_us: int = 200
    instance_count: int = 1
    instance_kind: str = "cpu"
    log_sample_rate: float = 1.0
    backend: str = "auto"
    log_max_per_s: float = 1000.0

    def check(self) -> None:
        """Refuses, with InvalidArgument naming the field, a value Triton or the Lepton model cannot take."""
        f = "config."
        if not 1 <= self.max_batch_size <= MAX_BATCH_SIZE:
            raise InvalidArgument(
                f"must be 1..{MAX_BATCH_SIZE}, got {shown(self.max_batch_size)}", field=f + "max_batch_size"
            )
        sizes = self.preferred_batch_sizes
        if len(sizes) > MAX_PREFERRED_BATCH_SIZES:
            raise InvalidArgument(
                f"at most {MAX_PREFERRED_BATCH_SIZES} sizes, got {len(sizes)}", field=f + "preferred_batch_sizes"
            )
        bad = [b for b in sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise InvalidArgument(
                f"{shown(bad)} outside 1..max_batch_size ({self.max_batch_size})", field=f + "preferred_batch_sizes"
            )
        if any(a >= b for a, b in itertools.pairwise(sizes)):
            raise InvalidArgument(f"must be increasing, got {shown(sizes)}", field=f + "preferred_batch_sizes")
        if not 0 <= self.max_queue_delay_us <= MAX_QUEUE_DELAY_US:
            raise InvalidArgument(
                f"must be 0..{MAX_QUEUE_DELAY_US:_}, got {shown(self.max_queue_delay_us)}",
                field=f + "max_queue_delay_us",
            )
        if not 1 <= self.instance_count <= MAX_INSTANCE_COUNT:
            raise InvalidArgument(
                f"must be 1..{MAX_INSTANCE_COUNT}, got {shown(self.instance_count)}", field=f + "instance_count"
            )
        if self.instance_kind not in KINDS:
            raise InvalidArgument(
                f"must be one of {sorted(KINDS)}, got {shown(self.instance_kind)}", field=f + "instance_kind"
            )
        # ``not 0 <= x`` is true for NaN too: every range check below refuses it.
        if not 0.0 <= self.log_sample_rate <= 1.0:
            raise InvalidArgument(f"must be in [0, 1], got {shown(self.log_sample_rate)}", field=f + "log_sample_rate")
        if not 0.0 <= self.log_max_per_s <= MAX_LOG_PER_S:
            raise InvalidArgument(
                f"must be in [0, {MAX_LOG_PER_S:_}] (0: no limit), got {shown(self.log_max_per_s)}",
                field=f + "log_max_per_s",
            )
        if self.backend not in BACKENDS:
            raise InvalidArgument(f"must be one of {list(BACKENDS)}, got {shown(self.backend)}", field=f + "backend")


class Route(BaseModel):
    triton_model: str
    model_version: int
    weight: float


class HostState(BaseModel):
    #: The host's name in the deployer's host pool (never its address).
    url: str
    versions: list[int] = Field(default_factory=list)
    ready: bool = False
    error: str = ""
    checked_at: datetime | None = None


class RolloutRecord(BaseModel):
    from_version: int
    to_version: int
    strategy: str
    outcome: str = ""
    reason: str = ""
    smoke_rows: int = 0
    started_at: datetime
    finished_at: datetime | None = None
    seconds: float = 0.0


class DeploymentRecord(BaseModel):
    """A deployment, keyed ``<tenant>.<name>`` in KV ``deployments``."""

    tenant: str
    name: str
    state: DeploymentState
    model_name: str
    model_version: int
    dataset_id: str = ""
    dataset_version_id: str = ""
    training_job_id: str = ""
    evaluation_id: str = ""
    triton_model: str
    #: Unused: records from before the host pool kept the first host's address here; the address
    #: now comes from the pool, by the host's name, each time (``Deployment.triton_url``).
    triton_url: str = ""
    feature_columns: list[str] = Field(default_factory=list)
    text_columns: list[str] = Field(default_factory=list)
    error: str = ""
    updated_at: datetime
    #: Names of entries in the deployer's host pool (records from before it: addresses).
    hosts: list[str] = Field(default_factory=list)
    host_states: list[HostState] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    follow: str = ""
    strategy: str = "all_at_once"
    canary_weights: list[float] = Field(default_factory=lambda: [0.1, 0.5])
    canary_step_seconds: float = 5.0
    config: ServingConfig = Field(default_factory=ServingConfig)
    target_version: int = 0
    history: list[RolloutRecord] = Field(default_factory=list)
    backend: str = "python"
    backend_reason: str = ""
    #: Raw input rows (JSON-able column -> values) every rollout is smoke-tested with.
    recorded_inputs: dict[str, list[Any]] = Field(default_factory=dict)


class VersionInfo(BaseModel):
    """What the deployer learned of a registry version from ``registry.version.created``.

    Kept at ``<tenant>.version.<model>.<n>``, so a rollout needs no call to the registry
    (event handlers have no caller key to make one with).
    """

    tenant: str
    model_name: str
    version: int
    artifact: ObjectRefRecord
    dataset_object: ObjectRefRecord | None = None
    split_seed: int = 42
    test_fraction: float = 0.2
    dataset_id: str = ""
    dataset_version_id: str = ""
    training_job_id: str = ""
    evaluation_id: str = ""


class Defaults(BaseModel):
    log_sample_rate: float
    log_max_per_s: float = 1000.0
    max_batch_size: int
    max_queue_delay_us: int


class Records:
    """The deployments and versions in the store, and a lock per deployment that its rollout holds."""

    def __init__(self, store: Store[DeploymentRecord], versions: Store[VersionInfo]) -> None:
        self.store = store
        self.versions = versions
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, tenant: str, name: str) -> DeploymentRecord:
        return (await self.store.require(f"{tenant}.{name}", f"deployment {name!r}")).value

    async def list(self, tenant: str) -> builtins.list[DeploymentRecord]:
        return await self.store.values(f"{tenant}.*")

    async def remember(self, info: VersionInfo) -> None:
        await self.versions.put(f"{info.tenant}.version.{info.model_name}.{info.version}", info)

    async def version(self, tenant: str, model: str, version: int) -> VersionInfo:
        found = await self.versions.get(f"{tenant}.version.{model}.{version}")
        if found is None:
            raise NotFound(f"the deployer knows no version {version} of model {model!r}", field="version")
        return found.value

    async def latest(self, tenant: str, model: str) -> int:
        numbers = [v.version for v in await self.versions.values(f"{tenant}.version.{model}.*")]
        if not numbers:
            raise NotFound(f"the deployer knows no version of model {model!r}", field="model_name")
        return max(numbers)

    async def save(self, record: DeploymentRecord) -> DeploymentRecord:
        """Stores ``record``, stamped with the time; returns what was stored."""
        record = record.model_copy(update={"updated_at": now()})
        await self.store.put(f"{record.tenant}.{record.name}", record)
        return record

    def lock(self, tenant: str, name: str) -> asyncio.Lock:
        """The deployment's lock: held by its rollout, its deletion and its reconcile."""
        return self._locks.setdefault(f"{tenant}.{name}", asyncio.Lock())
