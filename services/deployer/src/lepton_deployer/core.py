"""Deployments on Triton: rollouts that never stop the stable version, rollback, many hosts.

Model files travel inside Triton's load request (``files={"file:<v>/...": bytes}``),
so no host shares a filesystem with the deployer.

A deployment serves its stable version from the Triton model ``<tenant>--<name>``
(tenant-qualified, so two tenants' deployments never collide). A rollout to a new
version runs these steps on every host, and only moves on when every host passed:

1. **stage**: load the new version as its own model ``<tenant>--<name>--next`` and
   wait until it is ready;
2. **smoke test**: send it the deployment's recorded inputs and compare the answers
   with the model's own in-process predictions (to 1e-6; float32 models also get a relative
   1e-5, see ``smoke_tolerance``);
3. **canary** (optional): give the staged model a growing share of routed traffic
   (the routes in the record, which the SDK honours) and check Triton's failure count
   for it after each step;
4. **promote**: load the stable model with both versions (Triton keeps serving the old
   one until the new one is ready; unversioned requests then get the new one), point
   every route at the new version, wait ``drain_s`` for routed clients to notice, and
   reload the stable model with only the new version, which unloads the old one;
5. unload the staged model.

Any failure before step 4 finishes leaves the old version serving and rolls the
staged model back (``deployment.rolled_back``). Loading both versions in step 4 was
measured to serve every request during the swap.

A reconcile loop checks every host of every ready deployment; a host that lost its
models (a restart) gets them back.
"""

from __future__ import annotations

import asyncio
import builtins
import io
import json
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from importlib import resources
from typing import Any, Literal

import numpy as np
import polars as pl
import tritonclient.grpc.aio as triton_aio
from pydantic import BaseModel, Field
from tritonclient.utils import InferenceServerException

from lepton_core.bus import ObjectRefRecord, ObjectStore
from lepton_core.errors import FailedPrecondition, InvalidArgument, LeptonError, NotFound, Unavailable
from lepton_core.store import Store
from lepton_core.telemetry import inject_context
from lepton_core.wire import now
from lepton_ml import artifacts, serving, splits

INPUT_NAME = serving.INPUT
TEXT_INPUT_NAME = serving.TEXT_INPUT
OUTPUT_NAME = serving.OUTPUT
STAGED_SUFFIX = "--next"
#: Recorded rows each rollout smoke-tests with.
SMOKE_ROWS = 16
SMOKE_TOLERANCE = 1e-6
#: Relative tolerance added for models that compute in float32 (``compute_dtype``, the
#: torch MLP): a GPU, or another host's CPU, sums in another order. Measured on an H200:
#: 1.8e-05 absolute (about 1e-7 relative) for an MLP on diabetes (docs/serving.md).
FLOAT32_RTOL = 1e-5
MAX_HISTORY = 20
STRATEGIES = ("all_at_once", "canary")
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
BACKENDS = ("auto", "python", "onnx")
log = logging.getLogger(__name__)


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
        if not 1 <= self.max_batch_size <= 4096:
            raise InvalidArgument(f"must be 1..4096, got {self.max_batch_size}", field="config.max_batch_size")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise InvalidArgument(
                f"{bad} outside 1..max_batch_size ({self.max_batch_size})", field="config.preferred_batch_sizes"
            )
        if not 0 <= self.max_queue_delay_us <= 10_000_000:
            raise InvalidArgument(f"must be 0..1e7, got {self.max_queue_delay_us}", field="config.max_queue_delay_us")
        if not 1 <= self.instance_count <= 64:
            raise InvalidArgument(f"must be 1..64, got {self.instance_count}", field="config.instance_count")
        if self.instance_kind not in KINDS:
            raise InvalidArgument(
                f"must be one of {sorted(KINDS)}, got {self.instance_kind!r}", field="config.instance_kind"
            )
        if not 0.0 <= self.log_sample_rate <= 1.0 or math.isnan(self.log_sample_rate):
            raise InvalidArgument(f"must be in [0, 1], got {self.log_sample_rate}", field="config.log_sample_rate")
        if not 0.0 <= self.log_max_per_s < math.inf:
            raise InvalidArgument(f"must be a number >= 0, got {self.log_max_per_s}", field="config.log_max_per_s")
        if self.backend not in BACKENDS:
            raise InvalidArgument(f"must be one of {list(BACKENDS)}, got {self.backend!r}", field="config.backend")


class Route(BaseModel):
    triton_model: str
    model_version: int
    weight: float


class HostState(BaseModel):
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
    triton_url: str
    feature_columns: list[str] = Field(default_factory=list)
    text_columns: list[str] = Field(default_factory=list)
    error: str = ""
    updated_at: datetime
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
    nats_url: str
    log_sample_rate: float
    log_max_per_s: float = 1000.0
    max_batch_size: int
    max_queue_delay_us: int


def triton_model_name(tenant: str, deployment: str) -> str:
    """Tenant-qualified, so two tenants' deployments of the same name never collide in Triton."""
    return f"{tenant}--{deployment}"


def model_config(
    name: str,
    signature: artifacts.Signature,
    labels: dict[str, str],
    config: ServingConfig,
    nats_url: str,
    versions: list[int],
) -> str:
    """The Triton model configuration (JSON) for a Python-backend Lepton model.

    Numeric inputs travel as one FP64 matrix; text inputs (only models trained on a
    recipe over text columns take them) as one BYTES matrix beside it.
    """
    params = {
        **labels,
        "nats_url": nats_url,
        "log_sample_rate": str(config.log_sample_rate),
        "log_max_per_s": str(config.log_max_per_s),
    }
    inputs = [{"name": INPUT_NAME, "data_type": "TYPE_FP64", "dims": [len(signature.numeric_inputs())]}]
    if signature.text_inputs():
        inputs.append({"name": TEXT_INPUT_NAME, "data_type": "TYPE_STRING", "dims": [len(signature.text_inputs())]})
    batching: dict[str, Any] = {"max_queue_delay_microseconds": config.max_queue_delay_us}
    if config.preferred_batch_sizes:
        batching["preferred_batch_size"] = sorted(config.preferred_batch_sizes)
    return json.dumps(
        {
            "name": name,
            "backend": "python",
            "max_batch_size": config.max_batch_size,
            "input": inputs,
            "output": [{"name": OUTPUT_NAME, "data_type": "TYPE_FP64", "dims": [1]}],
            "dynamic_batching": batching,
            "instance_group": [{"kind": KINDS[config.instance_kind], "count": config.instance_count}],
            "version_policy": {"specific": {"versions": sorted(versions)}},
            "parameters": {k: {"string_value": v} for k, v in params.items()},
        }
    )


def smoke_tolerance(model: Any) -> tuple[float, float]:
    """``(atol, rtol)`` within which a served answer must equal the in-process prediction.

    Float64 models must agree to ``SMOKE_TOLERANCE``; models that compute in float32 also
    get ``FLOAT32_RTOL`` of each value, since the host serving them may sum in another
    order than the deployer does. A wrong model is off by far more than either.
    """
    return SMOKE_TOLERANCE, FLOAT32_RTOL if getattr(model, "compute_dtype", "float64") == "float32" else 0.0


def serving_model_source() -> bytes:
    """The Python-backend model that serves every Lepton bundle."""
    return (resources.files("lepton_ml") / "triton_model" / "model.py").read_bytes()


def recorded_rows(info: VersionInfo, dataset: bytes, signature: artifacts.Signature) -> dict[str, list[Any]]:
    """Up to SMOKE_ROWS held-out rows of the training data, in the model's raw input columns."""
    frame = pl.read_parquet(io.BytesIO(dataset))
    columns = signature.numeric_inputs() + signature.text_inputs()
    if not all(c in frame.columns for c in columns):
        return {}
    _, held = splits.holdout_split(frame.height, info.split_seed, info.test_fraction)
    rows = frame[held[:SMOKE_ROWS].tolist()].select(columns)
    return {c: rows[c].to_list() for c in columns}


ONNX_FILE = "lepton.onnx"
#: Beside it: what the serving model needs of the estimator it no longer loads.
ONNX_INFO_FILE = "lepton-onnx.json"


def onnx_info(model: Any) -> bytes:
    """``lepton-onnx.json`` for ``model``: its class name and whether it takes NaN (scikit-learn's tags)."""
    try:
        from sklearn.utils import get_tags

        allow_nan = bool(get_tags(model).input_tags.allow_nan)
    except Exception:
        allow_nan = False
    return json.dumps({"estimator": type(model).__name__, "allow_nan": allow_nan}).encode()


def choose_backend(
    asked: str, files: dict[str, bytes], inputs: dict[str, list[Any]]
) -> tuple[str, str, dict[str, bytes]]:
    """The backend for a version, why, and the files to add to the bundle's.

    ``auto`` and ``onnx`` try an ONNX conversion, checked on the recorded inputs against
    the model itself. An exact (float64, within 1e-6) conversion of a model without a
    preprocessing chain is run by onnxruntime inside the Python backend; anything else
    serves the bundle as trained. ``onnx`` refuses the rollout when it cannot be ONNX.
    """
    from lepton_ml import onnx_export

    if asked == "python":
        return "python", "asked for: the Python backend runs the skops/safetensors bundle as trained", {}
    bundle = artifacts.bundle_from_files(files)
    why = ""
    if bundle.preprocess is not None:
        why = "the model has a preprocessing chain, which the Python backend replays with polars"
    else:
        sample = pl.DataFrame(inputs) if inputs else None
        conversion = onnx_export.convert(bundle, sample)
        if not conversion.ok:
            why = f"no exact ONNX conversion: {conversion.reason}"
        elif conversion.model_dtype != "float64" or (conversion.max_abs_diff or 0.0) > SMOKE_TOLERANCE:
            why = (
                f"the ONNX graph runs in {conversion.model_dtype} (max |diff| {conversion.max_abs_diff:.2g}), "
                f"less exact than the {SMOKE_TOLERANCE:g} a rollout requires"
            )
        else:
            reason = (
                f"exact ONNX conversion (max |diff| {conversion.max_abs_diff:.2g} over {conversion.rows_checked} "
                "rows), run by onnxruntime inside the Python backend, which also logs the predictions "
                "(Triton's own onnxruntime backend is not used yet, on any host)"
            )
            return "onnxruntime", reason, {ONNX_FILE: conversion.onnx, ONNX_INFO_FILE: onnx_info(bundle.model)}
    if asked == "onnx":
        raise RolloutFailed(f"config.backend is onnx, but {why}")
    return "python", f"the Python backend runs the bundle as trained: {why}", {}


#: What an admitted Deploy does (Deployer._admit).
Admitted = Literal["join", "settings", "rollout"]


class RolloutFailed(LeptonError):
    """A rollout step failed; the message says which and on which host."""


Publish = Callable[[str, DeploymentRecord, dict[str, Any]], Awaitable[None]]


class Deployer:
    def __init__(
        self,
        store: Store[DeploymentRecord],
        versions: Store[VersionInfo],
        objects: ObjectStore,
        default_host: str,
        defaults: Defaults,
        load_timeout: float,
        publish: Publish,
        drain_s: float = 1.0,
    ) -> None:
        self.store = store
        self.versions = versions
        self._objects = objects
        self.default_host = default_host
        self.defaults = defaults
        self._load_timeout = load_timeout
        self._publish = publish
        self._drain_s = drain_s
        self._locks: dict[str, asyncio.Lock] = {}
        self._admission: dict[str, asyncio.Lock] = {}
        self._artifacts: dict[str, dict[str, bytes]] = {}
        self._serving: dict[tuple[str, str], tuple[str, str, dict[str, bytes]]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    # -- records ----------------------------------------------------------------------------------

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

    async def _save(self, record: DeploymentRecord) -> DeploymentRecord:
        record = record.model_copy(update={"updated_at": now()})
        await self.store.put(f"{record.tenant}.{record.name}", record)
        return record

    def _lock(self, tenant: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault(f"{tenant}.{name}", asyncio.Lock())

    # -- deploy -----------------------------------------------------------------------------------

    async def deploy(
        self,
        tenant: str,
        name: str,
        model: str,
        version: int,
        *,
        hosts: builtins.list[str] | None = None,
        strategy: str | None = None,
        canary_weights: builtins.list[float] | None = None,
        canary_step_seconds: float | None = None,
        follow: str | None = None,
        config: ServingConfig | None = None,
        wait: bool = False,
        strategy_once: str | None = None,
    ) -> DeploymentRecord:
        """Creates ``name`` or rolls it out to ``version``; the rollout runs in the background unless ``wait``.

        ``strategy_once`` overrides the deployment's strategy for this rollout only (a rollback
        goes all at once, and the deployment keeps its canary for the next one).
        """
        info = await self.version(tenant, model, version)
        # One admission at a time per deployment: two Deploy calls must not both see it idle.
        async with self._admission.setdefault(f"{tenant}.{name}", asyncio.Lock()):
            record, admitted = await self._admit(
                tenant,
                name,
                model,
                version,
                hosts=hosts,
                strategy=strategy,
                canary_weights=canary_weights,
                canary_step_seconds=canary_step_seconds,
                follow=follow,
                config=config,
            )
        if admitted == "join":
            if wait:  # the rollout already under way holds the deployment's lock until it ends
                async with self._lock(tenant, name):
                    pass
                return await self.get(tenant, name)
            return record
        if admitted == "settings":
            return record
        job = self._rollout(tenant, name, info, strategy_once)
        if wait:
            return await job
        task = asyncio.create_task(job)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return record

    async def _admit(
        self,
        tenant: str,
        name: str,
        model: str,
        version: int,
        *,
        hosts: builtins.list[str] | None,
        strategy: str | None,
        canary_weights: builtins.list[float] | None,
        canary_step_seconds: float | None,
        follow: str | None,
        config: ServingConfig | None,
    ) -> tuple[DeploymentRecord, Admitted]:
        """Checks a Deploy and saves the deployment's new settings and target.

        Returns:
            The saved record, and what the Deploy does: ``join`` a rollout to ``version`` already
            under way (nothing was changed), change only ``settings`` (it serves ``version``
            everywhere already), or start a ``rollout``.
        """
        current = await self.store.get(f"{tenant}.{name}")
        record = current.value if current else None
        if record is not None and record.model_name != model:
            raise FailedPrecondition(
                f"deployment {name!r} serves model {record.model_name!r}, not {model!r}", field="model_name"
            )
        busy = record is not None and record.state in (DeploymentState.ROLLING_OUT, DeploymentState.LOADING)
        if record is not None and busy and self._lock(tenant, name).locked():
            if record.target_version == version:
                return record, "join"
            raise FailedPrecondition(f"deployment {name!r} is rolling out version {record.target_version}")
        strategy = strategy or (record.strategy if record else "all_at_once")
        if strategy not in STRATEGIES:
            raise InvalidArgument(f"must be one of {list(STRATEGIES)}, got {strategy!r}", field="strategy")
        weights = list(canary_weights) if canary_weights else (record.canary_weights if record else [0.1, 0.5])
        if any(not 0 < w < 1 for w in weights) or weights != sorted(weights):
            raise InvalidArgument(f"ascending shares in (0, 1), got {weights}", field="canary_weights")
        step = canary_step_seconds if canary_step_seconds else (record.canary_step_seconds if record else 5.0)
        if not 0 < step <= 3600:
            raise InvalidArgument(f"must be in (0, 3600], got {step}", field="canary_step_seconds")
        config = config or (record.config if record else self._default_config())
        config.check()
        hosts = list(dict.fromkeys(hosts or (record.hosts if record else [self.default_host])))
        if record is None:
            record = DeploymentRecord(
                tenant=tenant,
                name=name,
                state=DeploymentState.LOADING,
                model_name=model,
                model_version=0,
                triton_model=triton_model_name(tenant, name),
                triton_url=hosts[0],
                updated_at=now(),
            )
        record = record.model_copy(
            update={
                "hosts": hosts,
                "triton_url": hosts[0],
                "strategy": strategy,
                "canary_weights": weights,
                "canary_step_seconds": step,
                "follow": record.follow if follow is None else follow,
                "config": config,
            }
        )
        if (
            record.model_version == version
            and record.state == DeploymentState.READY
            and set(hosts) == {h.url for h in record.host_states if h.ready}
        ):
            return await self._save(record), "settings"
        record = await self._save(
            record.model_copy(
                update={
                    "state": DeploymentState.ROLLING_OUT if record.model_version else DeploymentState.LOADING,
                    "target_version": version,
                    "error": "",
                }
            )
        )
        return record, "rollout"

    def _default_config(self) -> ServingConfig:
        return ServingConfig(
            max_batch_size=self.defaults.max_batch_size,
            max_queue_delay_us=self.defaults.max_queue_delay_us,
            log_sample_rate=self.defaults.log_sample_rate,
            log_max_per_s=self.defaults.log_max_per_s,
        )

    async def rollback(self, tenant: str, name: str, wait: bool = False) -> DeploymentRecord:
        record = await self.get(tenant, name)
        previous = next(
            (r.from_version for r in reversed(record.history) if r.outcome == "completed" and r.from_version), 0
        )
        if not previous:
            raise FailedPrecondition(f"deployment {name!r} has no earlier version to roll back to")
        return await self.deploy(tenant, name, record.model_name, previous, wait=wait, strategy_once="all_at_once")

    async def delete(self, tenant: str, name: str) -> DeploymentRecord:
        async with self._lock(tenant, name):
            record = await self.get(tenant, name)
            for host in record.hosts:
                for model in (record.triton_model, record.triton_model + STAGED_SUFFIX):
                    try:
                        await self._unload(host, model)
                    except Exception as exc:  # a dead host has nothing loaded to free
                        log.warning("unload of %s on %s failed: %s", model, host, exc)
            await self.store.delete(f"{tenant}.{name}")
            return record

    # -- the rollout ------------------------------------------------------------------------------

    async def _rollout(
        self, tenant: str, name: str, info: VersionInfo, strategy_once: str | None = None
    ) -> DeploymentRecord:
        async with self._lock(tenant, name):
            record = await self.get(tenant, name)
            old = record.model_version
            strategy = strategy_once or record.strategy
            entry = RolloutRecord(from_version=old, to_version=info.version, strategy=strategy, started_at=now())
            await self._publish("started", record, {"from_version": old})
            loop = asyncio.get_running_loop()
            started = loop.time()
            # Nothing serves yet on a first deployment: the version is staged (and checked)
            # in the stable model itself, which saves Triton a second load.
            staged = record.triton_model + STAGED_SUFFIX if old else record.triton_model
            try:
                files = await self._files(info)
                signature = artifacts.Signature(**json.loads(files[artifacts.SIGNATURE_FILE]))
                inputs = record.recorded_inputs or await self._record_inputs(info, signature)
                entry.smoke_rows = len(next(iter(inputs.values()), []))
                bundle = artifacts.bundle_from_files(files) if inputs else None
                backend, backend_reason, files = await self._serving_files(info, record.config.backend, inputs)
                for host in record.hosts:
                    await self._load(host, staged, record, info, files, [info.version])
                    if inputs and bundle is not None:
                        await self._smoke(
                            host, staged, info.version, inputs, signature, bundle, record.config.max_batch_size
                        )
                if old and strategy == "canary":
                    for weight in record.canary_weights:
                        record = await self._save(
                            record.model_copy(update={"routes": _routes(record, staged, info.version, weight)})
                        )
                        await asyncio.sleep(record.canary_step_seconds)
                        await self._check_failures(record, staged, info.version)
                # Promote: both versions in the stable model, then routes, then only the new one.
                if old:
                    old_info = await self.version(tenant, record.model_name, old)
                    _, _, old_files = await self._serving_files(old_info, record.config.backend, inputs)
                    for host in record.hosts:
                        await self._load(host, record.triton_model, record, info, files, [old, info.version], old_files)
            except Exception as exc:
                reason = exc.message if isinstance(exc, LeptonError) else f"{type(exc).__name__}: {exc}"
                return await self._abandon(record, info, entry, staged, reason)
            record = await self._save(
                record.model_copy(
                    update={
                        "routes": [Route(triton_model=record.triton_model, model_version=info.version, weight=1.0)],
                        "model_version": info.version,
                        "feature_columns": signature.numeric_inputs(),
                        "text_columns": signature.text_inputs(),
                        "recorded_inputs": inputs,
                        "dataset_id": info.dataset_id,
                        "dataset_version_id": info.dataset_version_id,
                        "training_job_id": info.training_job_id,
                        "evaluation_id": info.evaluation_id,
                        "backend": backend,
                        "backend_reason": backend_reason,
                    }
                )
            )
            if old:
                await asyncio.sleep(self._drain_s)  # routed clients re-read the routes meanwhile
                for host in record.hosts:
                    await self._load(host, record.triton_model, record, info, files, [info.version])
                    await self._quiet_unload(host, staged)
            entry.outcome, entry.finished_at = "completed", now()
            entry.seconds = loop.time() - started
            record = await self._save(
                record.model_copy(
                    update={
                        "state": DeploymentState.READY,
                        "target_version": 0,
                        "error": "",
                        "host_states": [
                            HostState(url=h, versions=[info.version], ready=True, checked_at=now())
                            for h in record.hosts
                        ],
                        "history": [*record.history, entry][-MAX_HISTORY:],
                    }
                )
            )
            await self._publish("ready", record, {})
            return record

    async def _abandon(
        self, record: DeploymentRecord, info: VersionInfo, entry: RolloutRecord, staged: str, reason: str
    ) -> DeploymentRecord:
        """Rolls a failed rollout back: the staged model goes, the stable one stays (or is restored)."""
        log.warning("rollout of %s v%d failed: %s", record.name, info.version, reason)
        for host in record.hosts:
            await self._quiet_unload(host, staged)
        old = record.model_version
        if old:
            try:
                old_info = await self.version(record.tenant, record.model_name, old)
                _, _, old_files = await self._serving_files(old_info, record.config.backend, record.recorded_inputs)
            except Exception as exc:  # the reconcile loop restores it once it can
                log.error("cannot restore %s v%d: %s", record.name, old, exc)
                old_files = {}
            for host in record.hosts if old_files else []:
                try:  # restores [old] where step 4 got as far as loading both
                    await self._load(host, record.triton_model, record, old_info, old_files, [old])
                except Exception as exc:
                    log.error("restoring %s v%d on %s failed: %s", record.name, old, host, exc)
        entry.outcome, entry.reason, entry.finished_at = ("rolled_back" if old else "failed"), reason, now()
        record = await self._save(
            record.model_copy(
                update={
                    "state": DeploymentState.READY if old else DeploymentState.FAILED,
                    "target_version": 0,
                    "error": reason,
                    "routes": [Route(triton_model=record.triton_model, model_version=old, weight=1.0)] if old else [],
                    "history": [*record.history, entry][-MAX_HISTORY:],
                }
            )
        )
        await self._publish("rolled_back" if old else "failed", record, {"version": info.version, "reason": reason})
        return record

    async def _files(self, info: VersionInfo) -> dict[str, bytes]:
        key = info.artifact.digest
        if key not in self._artifacts:
            if len(self._artifacts) >= 32:
                self._artifacts.pop(next(iter(self._artifacts)))
            self._artifacts[key] = artifacts.unpack_files(await self._objects.get(info.artifact))
        return self._artifacts[key]

    async def _serving_files(
        self, info: VersionInfo, backend: str, inputs: dict[str, builtins.list[Any]]
    ) -> tuple[str, str, dict[str, bytes]]:
        """The backend for a version, why, and the files Triton gets for it (cached per artifact and choice)."""
        key = (info.artifact.digest, backend)
        if key not in self._serving:
            files = await self._files(info)
            chosen, why, extra = await asyncio.to_thread(choose_backend, backend, files, inputs)
            if len(self._serving) >= 32:
                self._serving.pop(next(iter(self._serving)))
            self._serving[key] = (chosen, why, {**files, **extra})
        return self._serving[key]

    async def _record_inputs(self, info: VersionInfo, signature: artifacts.Signature) -> dict[str, builtins.list[Any]]:
        if info.dataset_object is None:
            return {}
        return recorded_rows(info, await self._objects.get(info.dataset_object), signature)

    async def _load(
        self,
        host: str,
        triton_model: str,
        record: DeploymentRecord,
        info: VersionInfo,
        files: dict[str, bytes],
        versions: builtins.list[int],
        other_files: dict[str, bytes] | None = None,
    ) -> None:
        """Loads ``versions`` of ``triton_model`` on ``host`` and waits until each is ready."""
        signature = artifacts.Signature(**json.loads(files[artifacts.SIGNATURE_FILE]))
        labels = {
            "tenant": record.tenant,
            "deployment": record.name,
            "model_name": record.model_name,
            "model_version": str(max(versions)),
        }
        config = model_config(triton_model, signature, labels, record.config, self.defaults.nats_url, versions)
        source = serving_model_source()
        payload: dict[str, bytes] = {}
        for v in versions:
            chosen = files if v == info.version else (other_files or files)
            payload[f"file:{v}/model.py"] = source
            payload.update({f"file:{v}/{n}": data for n, data in chosen.items()})
        client = triton_aio.InferenceServerClient(host)
        try:
            await client.load_model(triton_model, config=config, files=payload, client_timeout=self._load_timeout)
            for v in versions:
                await _wait_ready(client, triton_model, str(v), self._load_timeout)
        except InferenceServerException as exc:
            raise RolloutFailed(f"Triton at {host} could not load {triton_model} v{versions}: {exc.message()}") from exc
        finally:
            await client.close()

    async def _smoke(
        self,
        host: str,
        triton_model: str,
        version: int,
        inputs: dict[str, builtins.list[Any]],
        signature: artifacts.Signature,
        bundle: artifacts.Bundle,
        batch: int,
    ) -> None:
        """The recorded rows through Triton (``batch`` rows a request) must give the in-process predictions."""
        frame = pl.DataFrame(inputs)
        needed = signature.numeric_inputs() + signature.text_inputs()
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise RolloutFailed(
                f"smoke test: version {version} takes columns {missing} that the deployment's recorded inputs "
                f"({sorted(frame.columns)}) lack: it would not understand today's requests"
            )
        client = triton_aio.InferenceServerClient(host)
        parts = []
        try:
            for start in range(0, frame.height, batch):
                chunk = frame.slice(start, batch)
                tensors = serving.input_tensors(chunk, signature.numeric_inputs(), signature.text_inputs())
                carrier: dict[str, Any] = {"lepton_check": "smoke"}  # served, never logged as traffic
                inject_context(carrier)
                result = await client.infer(
                    triton_model, tensors, model_version=str(version), parameters=carrier, client_timeout=30
                )
                parts.append(np.asarray(result.as_numpy(OUTPUT_NAME), dtype=np.float64).reshape(-1))
        except InferenceServerException as exc:
            raise RolloutFailed(f"smoke test on {host}: version {version} failed: {exc.message()}") from exc
        except ValueError as exc:  # the answer's data does not fill its declared shape
            raise RolloutFailed(
                f"smoke test on {host}: version {version} answered a malformed {OUTPUT_NAME!r} tensor ({exc}); "
                "an empty one comes from a Python backend built for another numpy than its stub's (docs/serving.md)"
            ) from exc
        finally:
            await client.close()
        got = np.concatenate(parts) if parts else np.empty(0)
        want = np.asarray(bundle.predict(frame), dtype=np.float64).reshape(-1)
        atol, rtol = smoke_tolerance(bundle.model)
        if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
            diff = float(np.nanmax(np.abs(got - want))) if got.shape == want.shape else float("inf")
            allowed = f"{atol:g}" + (f" + {rtol:g} x |prediction|" if rtol else "")
            raise RolloutFailed(
                f"smoke test on {host}: version {version} answers differ from the model's own predictions "
                f"(max abs difference {diff:.3g} over {len(want)} rows; allowed {allowed})"
            )

    async def _check_failures(self, record: DeploymentRecord, staged: str, version: int) -> None:
        for host in record.hosts:
            client = triton_aio.InferenceServerClient(host)
            try:
                stats = await client.get_inference_statistics(staged, str(version), as_json=True)
            finally:
                await client.close()
            for s in stats.get("model_stats", []):
                failed = int(s.get("inference_stats", {}).get("fail", {}).get("count", 0))
                if failed:
                    raise RolloutFailed(f"canary: version {version} failed {failed} requests on {host}")

    async def _unload(self, host: str, model: str) -> None:
        client = triton_aio.InferenceServerClient(host)
        try:
            await client.unload_model(model, client_timeout=30)
        finally:
            await client.close()

    async def _quiet_unload(self, host: str, model: str) -> None:
        try:
            await self._unload(host, model)
        except Exception as exc:
            log.warning("unload of %s on %s failed: %s", model, host, exc)

    # -- hosts ------------------------------------------------------------------------------------

    async def reconcile(self) -> builtins.list[str]:
        """Reloads the stable version wherever a host lost it, and ends rollouts a stopped
        deployer left half-way; returns what it repaired."""
        repaired: builtins.list[str] = []
        for record in await self.store.values("*.*"):
            if await self._interrupted(record):
                repaired.append(f"{record.name}: interrupted rollout of v{record.target_version} rolled back")
                continue
            if record.state != DeploymentState.READY or not record.model_version:
                continue
            lock = self._lock(record.tenant, record.name)
            if lock.locked():
                continue  # a rollout is changing it right now
            async with lock:
                states = []
                for host in record.hosts:
                    state = HostState(url=host, checked_at=now())
                    try:
                        client = triton_aio.InferenceServerClient(host)
                        try:
                            ready = await client.is_model_ready(record.triton_model, str(record.model_version))
                        finally:
                            await client.close()
                        if not ready:
                            info = await self.version(record.tenant, record.model_name, record.model_version)
                            _, _, files = await self._serving_files(info, record.config.backend, record.recorded_inputs)
                            await self._load(host, record.triton_model, record, info, files, [record.model_version])
                            repaired.append(f"{record.name} v{record.model_version} on {host}")
                        state.versions, state.ready = [record.model_version], True
                    except Exception as exc:
                        state.error = exc.message if isinstance(exc, LeptonError) else f"{type(exc).__name__}: {exc}"
                    states.append(state)
                current = await self.store.get(f"{record.tenant}.{record.name}")
                if current is not None:
                    await self._save(current.value.model_copy(update={"host_states": states}))
        return repaired

    async def _interrupted(self, record: DeploymentRecord) -> bool:
        """Rolls back a rollout no task of this process runs and that has not moved for longer
        than a load may take: the deployer that ran it stopped (its replacement finds it here)."""
        if record.state not in (DeploymentState.ROLLING_OUT, DeploymentState.LOADING):
            return False
        lock = self._lock(record.tenant, record.name)
        if lock.locked() or (now() - record.updated_at).total_seconds() < self._load_timeout + 60:
            return False
        async with lock:
            # Read again under the lock: a Deploy may have taken the deployment over meanwhile.
            fresh = await self.store.get(f"{record.tenant}.{record.name}")
            if fresh is None or fresh.value.updated_at != record.updated_at:
                return False
            target = record.target_version
            info = VersionInfo(
                tenant=record.tenant,
                model_name=record.model_name,
                version=target,
                artifact=ObjectRefRecord(bucket="", name="", digest="", size=0),
            )
            entry = RolloutRecord(
                from_version=record.model_version,
                to_version=target,
                strategy=record.strategy,
                started_at=record.updated_at,
            )
            staged = record.triton_model + STAGED_SUFFIX if record.model_version else record.triton_model
            await self._abandon(
                record, info, entry, staged, "the rollout was interrupted: the deployer stopped mid-way"
            )
        return True

    async def statistics(self, record: DeploymentRecord) -> tuple[builtins.list[dict[str, Any]], builtins.list[str]]:
        """Triton's statistics of the deployment's models on every host, and hosts that did not answer."""
        out: builtins.list[dict[str, Any]] = []
        warnings: builtins.list[str] = []
        for host in record.hosts:
            client = triton_aio.InferenceServerClient(host)
            try:
                for model in (record.triton_model, record.triton_model + STAGED_SUFFIX):
                    try:
                        stats = await client.get_inference_statistics(model, as_json=True)
                    except InferenceServerException:
                        continue  # not loaded there (the staged model, mostly)
                    for s in stats.get("model_stats", []):
                        s["host"] = host
                        s["ready"] = await client.is_model_ready(model, s.get("version", ""))
                        out.append(s)
            except Exception as exc:
                warnings.append(f"{host}: {exc}")
            finally:
                await client.close()
        return out, warnings


def _routes(record: DeploymentRecord, staged: str, version: int, weight: float) -> list[Route]:
    return [
        Route(triton_model=record.triton_model, model_version=record.model_version, weight=round(1 - weight, 6)),
        Route(triton_model=staged, model_version=version, weight=weight),
    ]


async def _wait_ready(client: triton_aio.InferenceServerClient, name: str, version: str, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await client.is_model_ready(name, version):
        if asyncio.get_running_loop().time() > deadline:
            raise Unavailable(f"Triton did not report {name} v{version} ready within {timeout:.0f}s")
        await asyncio.sleep(0.1)
