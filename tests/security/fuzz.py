"""Property-based fuzzing of every Lepton RPC, generated from the service descriptors.

Everything here is derived from the protobuf descriptors of the generated modules: the list of
RPCs (:func:`rpcs`), a Hypothesis strategy for each request type (:class:`Values`), and the
generic calls (:class:`Caller`, through ``grpc`` multi-callables, no generated stubs). Three ways
to make a request:

- **random**: every field drawn from adversarial values of its type, plus the seeded real ids;
- **broken**: a valid request from :data:`VALID` (built from the :class:`Seed`) with one field
  (top level, or one level into a message field) replaced by an adversarial value;
- **streams** (client-streaming RPCs): garbage chunks, truncated, oversized and out-of-order streams.

:class:`Fuzzer` sends them, applies the oracles (:func:`problem`), checks that a refused request
left the listed objects as they were (:data:`PROBES`), and collects :class:`Finding` s rather than
stopping at the first, so one run shows everything still broken.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import strategies as st

#: Generated module -> the platform service (``EmbeddedPlatform.addresses`` key) that serves it.
MODULES: dict[str, str] = {
    "lepton.data.v1.data_pb2": "data",
    "lepton.trainer.v1.trainer_pb2": "trainer",
    "lepton.evaluator.v1.evaluator_pb2": "evaluator",
    "lepton.registry.v1.registry_pb2": "registry",
    "lepton.deployer.v1.deployer_pb2": "deployer",
    "lepton.monitor.v1.monitor_pb2": "monitor",
    # Keys, audit, plans and tenants, on the registry's port. The fuzzer's key is an admin of its
    # own tenant: it may make, revoke and rotate keys there (never its own, which nothing names),
    # and is refused what only an operator may (plans, deleting a tenant).
    "lepton.access.v1.access_pb2": "registry",
}
#: Served by every service (lepton_core.service registers it beside each service's own).
EVENTS_MODULE = "lepton.events.v1.stream_pb2"
TARGETS = ("data", "trainer", "evaluator", "registry", "deployer", "monitor")

DEADLINE_S = 10.0
"""Deadline of one call."""
STREAM_READ_S = 0.5
"""How long a server stream is read before the fuzzer cancels it (Subscribe never ends by itself)."""
MESSAGE_LIMIT = 2100
"""Longest acceptable status message (the interceptor cuts messages at about 2,000 characters)."""
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
LONG_LIST = 10_000
"""Length of the long repeated fields."""
MAX_DEPTH = 3
"""Nested messages deeper than this stay unset."""
MAX_REQUEST_BYTES = 48 * 1024 * 1024
"""A drawn request bigger than this is not sent (the channels' limit is 64 MiB), only counted."""

OK = grpc.StatusCode.OK
BAD_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS})
"""Codes that mean a bug whatever the message."""


# -- the RPCs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    """One method of one service, as the descriptors describe it, at one service's address."""

    service: str
    method: str
    path: str
    target: str
    request: Descriptor
    response: Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def label(self) -> str:
        at = f"@{self.target}" if self.service == "EventService" else ""
        return f"{self.service}.{self.method}{at}"


def rpcs(targets: Iterable[str] = TARGETS) -> list[Rpc]:
    """Every RPC of the six services, and EventService's at each of ``targets``."""
    out: list[Rpc] = []
    wanted = set(targets)
    modules = [(m, [t]) for m, t in MODULES.items() if t in wanted] + [(EVENTS_MODULE, sorted(wanted))]
    for module_name, served_at in modules:
        module = importlib.import_module(module_name)
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                for target in served_at:
                    out.append(
                        Rpc(
                            service=service.name,
                            method=method.name,
                            path=f"/{service.full_name}/{method.name}",
                            target=target,
                            request=method.input_type,
                            response=method.output_type,
                            client_streaming=method.client_streaming,
                            server_streaming=method.server_streaming,
                        )
                    )
    return out


# -- seeded state ----------------------------------------------------------------------------------


@dataclass
class Seed:
    """Real objects on the platform, so that valid requests (and some random fields) hit them."""

    dataset_id: str
    dataset_name: str
    version_id: str
    columns: list[str]
    target: str
    job_id: str
    algorithm: str
    model_name: str
    model_version: int
    deployment: str
    alias: str = ""
    evaluation_id: str = ""
    plots: list[str] = field(default_factory=list)
    csv: bytes = b""

    def strings(self) -> list[str]:
        """Every seeded string, for string fields of random requests."""
        values = [
            self.dataset_id,
            self.dataset_name,
            self.version_id,
            self.job_id,
            self.algorithm,
            self.model_name,
            self.deployment,
            self.alias,
            self.evaluation_id,
            self.target,
            *self.columns,
            *self.plots,
        ]
        return sorted({v for v in values if v})

    def protected(self) -> frozenset[str]:
        """Names a destructive RPC must not be given: deleting them would break later examples."""
        return frozenset(
            {self.dataset_id, self.dataset_name, self.model_name, self.deployment, self.alias, self.job_id} - {""}
        )


# -- adversarial values ----------------------------------------------------------------------------

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

SHORT_STRINGS: tuple[str, ...] = (
    "",
    " ",
    "x\n",
    "\n",
    "\x00",
    "a\x00b",
    ".",
    "..",
    "*",
    ">",
    "a.b.*.>",
    "lepton.evt.>",
    "名字",
    "ÄÖÜ-é",
    "\u202e\u200b",
    "../../etc/passwd",
    "/",
    "a/b",
    "%s%n%x",
    "{}",
    "[]",
    "null",
    "[1,",
    '{"a": ',
    "NaN",
    "-1",
    "0",
    "1e309",
    "'; DROP TABLE x; --",
    "UPPER",
    "-leading-dash",
    "_",
    "dv_",
    "ds_",
    "job_",
    "ev_",
    "dv_" + "a" * 65,
    "job_x.y",
    "default",
    "a" * 64,
    "a" * 65,
    "A-b_c",
)
LONG_STRINGS: tuple[str, ...] = (
    "x" * 10_000,
    "名" * 5_000,
    "[" * 10_000,
    '{"steps":' * 3_000,
    "a." * 5_000,
    "y" * 1_000_000,
)
JSON_STRINGS: tuple[str, ...] = (
    "[]",
    "{}",
    '{"steps": []}',
    '{"steps": [{"op": "nope"}]}',
    '{"steps": [{"op": "fill_nulls", "column": 7, "strategy": []}]}',
    '[{"kind": "range", "column": "x1", "min": "a", "max": null}]',
    '[{"kind": "not_null"}]',
    '[{"kind": "unique", "column": ["x"]}]',
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 50_000 + "1" + "}" * 50_000,
    '"a string"',
    "1e999",
    "NaN",
    "[1, 2, 3]",
    "\ufeff{}",
)
INTS = (0, 1, 2, -1, 3, 7, 99, 10**6, 10**12)
FLOATS = (
    0.0,
    -0.0,
    0.5,
    1.0,
    -1.0,
    2.0,
    1e-300,
    5e-324,
    1e308,
    -1e308,
    math.inf,
    -math.inf,
    math.nan,
)
BYTES: tuple[bytes, ...] = (
    b"",
    b"\x00",
    b"\xff\xfe\xfd",
    b"a,b\n1,2\n",
    b"a,b\n1,2,3,4\n\x00\x00",
    b"PAR1\x00\x00PAR1",
    b"ARROW1\x00\x00",
    b'{"a": 1}\n{"a": "x"}\n',
    b"x" * 10_000,
    b"\x80" * 1000,
)


def _int_bounds(fd: FieldDescriptor) -> tuple[int, int]:
    t = fd.type
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return INT32
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return UINT32
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return UINT64
    return INT64


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry


def _is_repeated(fd: FieldDescriptor) -> bool:
    return bool(fd.is_repeated)


class Values:
    """Hypothesis strategies for the fields and messages of the request types.

    A message is drawn as a dict ``{field name: value}`` (a missing key: the field stays unset),
    a nested message as a nested dict; :func:`build` turns it into the protobuf message.
    ``small`` values are the elements of the long lists (10,000 of a 1 MB string would not fit).
    """

    def __init__(self, seed: Seed | None, exclude: frozenset[str] = frozenset()) -> None:
        seeded = [s for s in (seed.strings() if seed else []) if s not in exclude]
        self.seeded_strings = seeded
        self.seeded_ints = sorted({seed.model_version, seed.model_version + 1}) if seed else [1]

    def string(self, fd: FieldDescriptor | None, *, small: bool = False) -> st.SearchStrategy[str]:
        options: list[st.SearchStrategy[str]] = [
            st.sampled_from(SHORT_STRINGS),
            st.text(st.characters(codec="utf-8"), max_size=12),
        ]
        if self.seeded_strings:
            options.append(st.sampled_from(self.seeded_strings))
            # Real values made almost right: a dot, a wildcard, a case or a byte away.
            options.append(
                st.tuples(
                    st.sampled_from(self.seeded_strings), st.sampled_from(("", ".", ".>", "*", "\n", "X", " "))
                ).map(lambda p: p[0].upper() if p[1] == "X" else p[0] + p[1])
            )
        if fd is not None and fd.name.endswith("_json"):
            options.append(st.sampled_from(JSON_STRINGS if not small else JSON_STRINGS[:8]))
        if not small:
            options.append(st.sampled_from(LONG_STRINGS))
        return st.one_of(options)

    def scalar(self, fd: FieldDescriptor, *, small: bool = False) -> st.SearchStrategy[Any]:
        t = fd.type
        if t == FieldDescriptor.TYPE_STRING:
            return self.string(fd, small=small)
        if t == FieldDescriptor.TYPE_BYTES:
            return st.one_of(st.sampled_from(BYTES[:8] if small else BYTES), st.binary(max_size=64))
        if t == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            width = 32 if t == FieldDescriptor.TYPE_FLOAT else 64
            extremes = FLOATS if width == 64 else tuple(f for f in FLOATS if not (math.isfinite(f) and abs(f) > 3e38))
            return st.one_of(st.sampled_from(extremes), st.floats(width=width))
        if t == FieldDescriptor.TYPE_ENUM:
            numbers = [v.number for v in fd.enum_type.values]
            return st.one_of(st.sampled_from(numbers), st.sampled_from((-1, max(numbers) + 1, 99, INT32[1])))
        low, high = _int_bounds(fd)
        edges = sorted({v for v in (*INTS, *self.seeded_ints, low, high, low + 1, high - 1) if low <= v <= high})
        return st.one_of(st.sampled_from(edges), st.integers(low, high))

    def value(self, fd: FieldDescriptor, depth: int, *, small: bool = False) -> st.SearchStrategy[Any]:
        """A value for ``fd``: a list for repeated fields, a dict for maps and messages."""
        if _is_map(fd):
            key_fd = fd.message_type.fields_by_name["key"]
            val_fd = fd.message_type.fields_by_name["value"]
            key = self.single(key_fd, depth + 1, small=True)
            val = self.single(val_fd, depth + 1, small=True)
            few = st.dictionaries(key, val, max_size=3)
            if small:
                return st.one_of(st.just({}), few)
            flat = st.just({}) if val_fd.type == FieldDescriptor.TYPE_MESSAGE else val
            many = st.tuples(key, flat).map(
                lambda kv: {(kv[0] + str(i) if isinstance(kv[0], str) else kv[0] + i): kv[1] for i in range(1000)}
            )
            return st.one_of(st.just({}), few, many)
        if _is_repeated(fd):
            some = st.lists(self.single(fd, depth, small=small), min_size=1, max_size=4)
            if small:
                return st.one_of(st.just([]), some)
            long_list = self.single(fd, depth, small=True).map(lambda v: [v] * LONG_LIST)
            return st.one_of(st.just([]), some, long_list)
        return self.single(fd, depth, small=small)

    def single(self, fd: FieldDescriptor, depth: int, *, small: bool = False) -> st.SearchStrategy[Any]:
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= MAX_DEPTH:
                return st.just({})
            # A small message (an element of a long list) nests at most two levels: bounded size.
            return self.message(fd.message_type, max(depth + 1, MAX_DEPTH - 1) if small else depth + 1, small=small)
        return self.scalar(fd, small=small)

    def message(self, desc: Descriptor, depth: int = 0, *, small: bool = False) -> st.SearchStrategy[dict[str, Any]]:
        """A random message of type ``desc``: each field unset or an adversarial value."""
        if not desc.fields:
            return st.just({})
        parts = {
            fd.name: st.one_of(st.just(_UNSET), self.value(fd, depth, small=small))
            for fd in desc.fields
            if not (fd.type == FieldDescriptor.TYPE_MESSAGE and depth >= MAX_DEPTH and not _is_map(fd))
        }
        return st.fixed_dictionaries(parts).map(lambda d: {k: v for k, v in d.items() if v is not _UNSET})


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


def build(desc: Descriptor, values: Mapping[str, Any]) -> Message:
    """The message of type ``desc`` with ``values`` (as :class:`Values` draws them)."""
    msg = GetMessageClass(desc)()
    fill(msg, values)
    return msg


def fill(msg: Message, values: Mapping[str, Any]) -> None:
    desc = msg.DESCRIPTOR
    for name, value in values.items():
        fd = desc.fields_by_name[name]
        if _is_map(fd):
            target = getattr(msg, name)
            is_message = fd.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE
            for k, v in value.items():
                if is_message:
                    fill(target[k], v)
                else:
                    target[k] = v
        elif _is_repeated(fd):
            target = getattr(msg, name)
            if fd.type == FieldDescriptor.TYPE_MESSAGE:
                for v in value:
                    fill(target.add(), v)
            else:
                target.extend(value)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            sub = getattr(msg, name)
            sub.SetInParent()
            fill(sub, value)
        else:
            setattr(msg, name, value)


def field_paths(desc: Descriptor) -> list[str]:
    """The fields one broken value can go to: each top-level field, and one level into messages."""
    out: list[str] = []
    for fd in desc.fields:
        out.append(fd.name)
        if fd.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(fd) and not _is_repeated(fd):
            out.extend(f"{fd.name}.{sub.name}" for sub in fd.message_type.fields)
    return out


def field_at(desc: Descriptor, path: str) -> FieldDescriptor:
    fd = None
    for part in path.split("."):
        fd = desc.fields_by_name[part]
        desc = fd.message_type
    assert fd is not None
    return fd


def with_field(values: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``values`` with the field at ``path`` set to ``value`` (``_UNSET``: cleared)."""
    out = dict(values)
    head, _, rest = path.partition(".")
    if rest:
        out[head] = with_field(out.get(head, {}), rest, value)
    elif value is _UNSET:
        out.pop(head, None)
    else:
        out[head] = value
    return out


def cut(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


# -- valid requests --------------------------------------------------------------------------------

_RULES = '[{"kind": "not_null", "column": "x1"}]'
_RECIPE = '{"steps": [{"op": "dedupe"}]}'

#: A valid request per RPC (method name), from the seeded state. Destructive ones name
#: objects that do not exist: a broken field must not delete what later examples use.
VALID: dict[str, Callable[[Seed], dict[str, Any]]] = {
    # data
    "GetDatasetVersion": lambda s: {"version_id": s.version_id},
    "ListDatasetVersions": lambda s: {"dataset_name": s.dataset_name},
    "GetDataset": lambda s: {"dataset": s.dataset_name},
    "ListDatasets": lambda s: {"search": "fuzz"},
    "DeleteDataset": lambda s: {"dataset": "fuzz-never-uploaded"},
    "UpdateSchema": lambda s: {"version_id": s.version_id, "changes": [{"name": s.columns[0], "dtype": "float64"}]},
    "SetValidationRules": lambda s: {"dataset": s.dataset_name, "rules_json": _RULES},
    "ValidateVersion": lambda s: {"version_id": s.version_id, "rules_json": _RULES},
    "ApplyRecipe": lambda s: {"version_id": s.version_id, "recipe_json": _RECIPE},
    "GetProfile": lambda s: {"version_id": s.version_id},
    "SplitVersion": lambda s: {"version_id": s.version_id, "spec": {"seed": 1, "train": 0.8, "test": 0.2}},
    "ReadDataset": lambda s: {"version_id": s.version_id, "columns": s.columns[:2], "batch_rows": 10},
    # trainer
    "SubmitTraining": lambda s: {
        "dataset_version_id": s.version_id,
        "algorithm": s.algorithm,
        "target": s.target,
        "model_name": "fuzz-scratch",
        "test_fraction": 0.2,
    },
    "GetTrainingJob": lambda s: {"job_id": s.job_id},
    "ListTrainingJobs": lambda s: {"state": 3, "limit": 10},
    "WatchTrainingJob": lambda s: {"job_id": s.job_id},
    "CancelTrainingJob": lambda s: {"job_id": "job_fuzznotajob"},
    "ListAlgorithms": lambda s: {},
    # evaluator
    "GetEvaluation": lambda s: {"training_job_id": s.job_id},
    "GetPlot": lambda s: {"training_job_id": s.job_id, "name": (s.plots or ["residuals"])[0]},
    "Evaluate": lambda s: {
        "model_name": s.model_name,
        "model_version": s.model_version,
        "dataset_version_id": s.version_id,
    },
    "ListEvaluations": lambda s: {"model_name": s.model_name, "model_version": s.model_version},
    # registry
    "GetModel": lambda s: {"name": s.model_name},
    "ListModels": lambda s: {},
    "GetModelVersion": lambda s: {"model_name": s.model_name, "version": s.model_version},
    "ListModelVersions": lambda s: {"model_name": s.model_name},
    "DownloadArtifact": lambda s: {"model_name": s.model_name, "version": s.model_version},
    "SetAlias": lambda s: {"model_name": s.model_name, "alias": "fuzz-alias", "version": s.model_version},
    "DeleteAlias": lambda s: {"model_name": s.model_name, "alias": "fuzz-no-such-alias"},
    "SetPromotionPolicy": lambda s: {"model_name": s.model_name, "policy": {"metric": "r2", "min_improvement": 0.0}},
    "GetLineage": lambda s: {"model_name": s.model_name, "version": s.model_version},
    "SearchModelVersions": lambda s: {"name_contains": s.model_name, "page_size": 10},
    "UpdateModel": lambda s: {"name": s.model_name, "description": "fuzzed", "set_tags": {"fuzz": "1"}},
    "UpdateModelVersion": lambda s: {
        "model_name": s.model_name,
        "version": s.model_version,
        "description": "fuzzed",
        "set_tags": {"fuzz": "1"},
    },
    "GetArtifactPublicKey": lambda s: {},
    "DeleteModelVersion": lambda s: {"model_name": "fuzz-no-such-model", "version": 1},
    # access (the registry's port)
    "CreateKey": lambda s: {"role": "viewer", "name": "fuzz-key", "ttl_seconds": 3600},
    "ListKeys": lambda s: {},
    "RevokeKey": lambda s: {"key": "fuzz-no-such-key"},
    "RotateKey": lambda s: {"key": "fuzz-no-such-key", "grace_seconds": 60},
    "WhoAmI": lambda s: {},
    "QueryAudit": lambda s: {"resource": f"model/{s.model_name}", "limit": 10},
    "SetPlan": lambda s: {"tenant": "fuzzer", "plan": "team"},
    "GetUsage": lambda s: {},
    "ListPlans": lambda s: {},
    "DeleteTenant": lambda s: {"tenant": "fuzz-gone", "confirm": "fuzz-gone"},
    "GetTenantDeletion": lambda s: {"tenant": "fuzz-gone"},
    # deployer
    "GetDeployment": lambda s: {"name": s.deployment},
    "ListDeployments": lambda s: {},
    "Deploy": lambda s: {"name": "fuzz-deploy", "model_name": s.model_name, "version": s.model_version},
    "Rollback": lambda s: {"name": "fuzz-no-such-deployment"},
    "DeleteDeployment": lambda s: {"name": "fuzz-no-such-deployment"},
    "GetDeploymentStatus": lambda s: {"name": s.deployment},
    # monitor
    "GetPredictionStats": lambda s: {"deployment": s.deployment},
    "GetServingMetrics": lambda s: {"deployment": s.deployment, "last_seconds": 60.0},
    "GetDriftReport": lambda s: {"deployment": s.deployment, "last_seconds": 60.0},
    "SendLabels": lambda s: {
        "deployment": s.deployment,
        "labels": [{"request_id": "fuzz-req", "row": 0, "value": 1.0}],
    },
    "GetLivePerformance": lambda s: {"deployment": s.deployment},
    "SetRules": lambda s: {
        "deployment": s.deployment,
        "rules": [
            {
                "name": "fuzz-latency",
                "metric": "latency_p95_ms",
                "comparison": ">",
                "threshold": 1000.0,
                "window_seconds": 60.0,
                "severity": "warning",
            }
        ],
    },
    "ListRules": lambda s: {"deployment": s.deployment},
    "ListAlerts": lambda s: {"deployment": s.deployment, "limit": 10},
    "SetRetrainingPolicy": lambda s: {"policy": {"deployment": s.deployment, "min_interval_seconds": 3600.0}},
    "GetRetrainingPolicy": lambda s: {"deployment": s.deployment},
    "QueryPredictionLogs": lambda s: {"deployment": s.deployment, "page_size": 10},
    "SummarizeLogs": lambda s: {"deployment": s.deployment, "top": 5},
    # events (every service)
    "Subscribe": lambda s: {"pattern": "dataset.>", "limit": 3},
    "ListDeadLetters": lambda s: {"consumer": "evaluator", "limit": 10},
    "ReplayDeadLetter": lambda s: {"id": 1},
}

#: RPCs whose every string field is kept off the seeded names (see :meth:`Seed.protected`).
DESTRUCTIVE = frozenset(
    {
        "DeleteDataset",
        "DeleteAlias",
        "DeleteDeployment",
        "DeleteModelVersion",
        "Rollback",
        "CancelTrainingJob",
        "RevokeKey",
        "RotateKey",
        "DeleteTenant",
    }
)


def broken_requests(rpc: Rpc, seed: Seed) -> st.SearchStrategy[tuple[str, Any, dict[str, Any]]]:
    """``(field path, bad value, request values)``: the valid request with one field broken."""
    values = Values(seed, seed.protected() if rpc.method in DESTRUCTIVE else frozenset())
    valid = VALID[rpc.method](seed)
    paths = field_paths(rpc.request)
    if not paths:
        return st.just(("(none)", None, valid))

    def one(path: str) -> st.SearchStrategy[tuple[str, Any, dict[str, Any]]]:
        fd = field_at(rpc.request, path)
        depth = path.count(".") + 1
        return st.one_of(st.just(_UNSET), values.value(fd, depth)).map(lambda v: (path, v, with_field(valid, path, v)))

    return st.sampled_from(paths).flatmap(one)


def worst_values(fd: FieldDescriptor) -> list[Any]:
    """The few values of ``fd``'s type most likely to break a service; every run sends each of them."""
    if _is_map(fd):
        key_fd = fd.message_type.fields_by_name["key"]
        val_fd = fd.message_type.fields_by_name["value"]
        key = _worst_scalars(key_fd)[0]
        val = {} if val_fd.type == FieldDescriptor.TYPE_MESSAGE else _worst_scalars(val_fd)[0]
        keys = [f"{key}{i}" for i in range(1000)] if isinstance(key, str) else [key + i for i in range(1000)]
        return [{key: val}, dict.fromkeys(keys, val)]
    if _is_repeated(fd):
        element = {} if fd.type == FieldDescriptor.TYPE_MESSAGE else _worst_scalars(fd)[0]
        return [[element] * LONG_LIST, [element, element]]
    return _worst_scalars(fd)


def _worst_scalars(fd: FieldDescriptor) -> list[Any]:
    t = fd.type
    if t == FieldDescriptor.TYPE_MESSAGE:
        return [_UNSET, {}]
    if t == FieldDescriptor.TYPE_STRING:
        out = ["", "x\n", "a.b.*.>", "名" * 2_000, "\x00"]
        return [*out, "[" * 100_000 + "]" * 100_000] if fd.name.endswith("_json") else out
    if t == FieldDescriptor.TYPE_BYTES:
        return [b"\xff\xfe", b"\x00" * 10_000]
    if t == FieldDescriptor.TYPE_BOOL:
        return [True]
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return [math.nan, -math.inf, -1.0]
    if t == FieldDescriptor.TYPE_ENUM:
        return [99]
    low, high = _int_bounds(fd)
    return [v for v in (-1, high, low) if low <= v <= high]


def sweep(rpc: Rpc, seed: Seed) -> list[tuple[str, Any, dict[str, Any]]]:
    """The valid request with each field, in turn, set to each of its :func:`worst_values`."""
    valid = VALID[rpc.method](seed)
    return [
        (path, value, with_field(valid, path, value))
        for path in field_paths(rpc.request)
        for value in worst_values(field_at(rpc.request, path))
    ]


def random_requests(rpc: Rpc, seed: Seed) -> st.SearchStrategy[dict[str, Any]]:
    values = Values(seed, seed.protected() if rpc.method in DESTRUCTIVE else frozenset())
    return values.message(rpc.request)


# -- upload streams --------------------------------------------------------------------------------


def upload_streams(rpc: Rpc, seed: Seed) -> st.SearchStrategy[tuple[str, Any, list[dict[str, Any]]]]:
    """``(kind, example, stream)`` for UploadDataset: each stream a list of request dicts."""
    values = Values(seed, seed.protected())
    csv = seed.csv or b"x1,y\n1,2\n"
    digest = "sha256:" + hashlib.sha256(csv).hexdigest()

    def header(name: str = "fuzz-upload", **over: Any) -> dict[str, Any]:
        h = {"dataset_name": name, "format": "csv", "expected_size": len(csv), "expected_digest": digest}
        return {"header": {**h, **over}}

    part = values.message(rpc.request)
    garbage = st.lists(part, max_size=6).map(lambda reqs: ("garbage parts", reqs, reqs))
    chunks = st.lists(st.sampled_from(BYTES) | st.binary(max_size=256), min_size=1, max_size=5)
    header_then_garbage = chunks.map(
        lambda cs: ("header + garbage chunks", cs, [header("fuzz-garbage"), *({"chunk": c} for c in cs)])
    )
    cut_at = st.integers(0, max(len(csv) - 1, 0))
    truncated = cut_at.map(lambda n: ("truncated", n, [header("fuzz-truncated"), {"chunk": csv[:n]}]))
    oversized = st.sampled_from((2, 20, 100)).map(
        lambda n: (
            "oversized (MB over the declared size)",
            n,
            [header("fuzz-oversized"), {"chunk": csv}, *({"chunk": b"9,9\n" * 262_144} for _ in range(n))],
        )
    )
    fixed = st.sampled_from(
        [
            ("empty stream", None, []),
            ("chunk before header", None, [{"chunk": csv}, header("fuzz-late-header")]),
            ("two headers", None, [header("fuzz-two-headers"), header("fuzz-two-headers"), {"chunk": csv}]),
            ("header only", None, [header("fuzz-header-only")]),
            ("empty header", None, [{"header": {}}, {"chunk": csv}]),
            ("wrong digest", None, [header("fuzz-digest", expected_digest="sha256:" + "0" * 64), {"chunk": csv}]),
            ("negative size", None, [header("fuzz-negative", expected_size=-1), {"chunk": csv}]),
            ("empty chunks", None, [header("fuzz-empty-chunks"), *({"chunk": b""} for _ in range(1000))]),
            ("format arrow, csv bytes", None, [header("fuzz-arrow", format="arrow"), {"chunk": csv}]),
        ]
    )
    header_paths = [p for p in field_paths(rpc.request.fields_by_name["header"].message_type)]

    def broken_header(path: str) -> st.SearchStrategy[tuple[str, Any, list[dict[str, Any]]]]:
        fd = field_at(rpc.request.fields_by_name["header"].message_type, path)
        return values.value(fd, 2).map(
            lambda v: (
                f"header.{path}",
                v,
                [with_field(header("fuzz-broken-header"), f"header.{path}", v), {"chunk": csv}],
            )
        )

    broken = st.sampled_from(header_paths).flatmap(broken_header)
    return st.one_of(garbage, header_then_garbage, truncated, oversized, fixed, broken)


# -- calls -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    responses: list[Message]
    seconds: float
    cancelled_by_us: bool = False


class Caller:
    """Generic calls to any RPC by its path: one channel per service, the SDK's metadata."""

    def __init__(self, addresses: Mapping[str, str], api_key: str) -> None:
        self.addresses = dict(addresses)
        self.metadata = (("authorization", f"Bearer {api_key}"),)
        self.channels = {name: grpc.insecure_channel(a, options=CHANNEL_OPTIONS) for name, a in self.addresses.items()}

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()

    def call(self, rpc: Rpc, request: Message | Iterable[Message], timeout: float = DEADLINE_S) -> Outcome:
        channel = self.channels[rpc.target]
        ser = _serialize
        de = GetMessageClass(rpc.response).FromString
        start = time.monotonic()
        responses: list[Message] = []
        cancelled = threading.Event()
        try:
            if rpc.client_streaming and not rpc.server_streaming:
                responses.append(
                    channel.stream_unary(rpc.path, request_serializer=ser, response_deserializer=de)(
                        iter(request), timeout=timeout, metadata=self.metadata
                    )
                )
            elif rpc.server_streaming and not rpc.client_streaming:
                call = channel.unary_stream(rpc.path, request_serializer=ser, response_deserializer=de)(
                    request, timeout=timeout, metadata=self.metadata
                )

                def stop() -> None:
                    cancelled.set()
                    call.cancel()

                timer = threading.Timer(STREAM_READ_S, stop)
                timer.start()
                try:
                    for response in call:
                        responses.append(response)
                        if len(responses) >= 1000:
                            stop()
                            break
                finally:
                    timer.cancel()
            elif rpc.client_streaming:
                call = channel.stream_stream(rpc.path, request_serializer=ser, response_deserializer=de)(
                    iter(request), timeout=timeout, metadata=self.metadata
                )
                responses.extend(call)
            else:
                responses.append(
                    channel.unary_unary(rpc.path, request_serializer=ser, response_deserializer=de)(
                        request, timeout=timeout, metadata=self.metadata
                    )
                )
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
            return Outcome(code, details, responses, time.monotonic() - start, cancelled.is_set())
        return Outcome(OK, "", responses, time.monotonic() - start, cancelled.is_set())


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def not_serving(addresses: Mapping[str, str]) -> list[str]:
    """The services that do not answer grpc.health.v1 with SERVING, with what they said."""
    out = []
    for name, address in addresses.items():
        try:
            with grpc.insecure_channel(address) as channel:
                resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5.0)
            if resp.status != health_pb2.HealthCheckResponse.SERVING:
                out.append(f"{name}: {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}")
        except grpc.RpcError as exc:
            out.append(f"{name}: {exc.code().name} {exc.details()}")
    return out


# -- oracles ---------------------------------------------------------------------------------------


def problem(outcome: Outcome, secrets: Iterable[str] = ()) -> str | None:
    """What is wrong with ``outcome``, or None. See the module docstring."""
    code, details = outcome.code, outcome.details
    if code in BAD_CODES:
        return code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        return "UNAVAILABLE (transport error or crashed service)"
    if code == grpc.StatusCode.CANCELLED and not outcome.cancelled_by_us:
        return "CANCELLED (not by the client: broken stream or trailer)"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and re.search(r"Stream removed|larger than max", details):
        return "RESOURCE_EXHAUSTED (transport)"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return "UNIMPLEMENTED (a descriptor RPC the server lacks)"
    if len(details) > MESSAGE_LIMIT:
        return f"{code.name} with a {len(details)}-character message"
    for secret in secrets:
        if secret and secret in details:
            return f"{code.name} message shows the API key"
    return None


def slow(outcome: Outcome) -> bool:
    """A call that ran into its deadline: reported, not failed (Deploy with wait may legitimately)."""
    return outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED


# -- "no request refused after storing something" --------------------------------------------------


def _err(code: grpc.StatusCode) -> tuple[str, str]:
    return ("error", code.name)


@dataclass(frozen=True)
class _Grows:
    """A fingerprint where other work may add entries meanwhile (training jobs register new models and
    versions): its dicts compare only on the keys both sides have; every other part compares exactly."""

    parts: dict[str, Any]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Grows) or self.parts.keys() != other.parts.keys():
            return False
        for key, mine in self.parts.items():
            theirs = other.parts[key]
            if isinstance(mine, dict) and isinstance(theirs, dict):
                if any(mine[k] != theirs[k] for k in mine.keys() & theirs.keys()):
                    return False
            elif mine != theirs:
                return False
        return True

    def __hash__(self) -> int:
        return 0


class Probes:
    """Fingerprints of what a storing RPC may change, read before and after a refused request.

    A cheap approximation: equal fingerprints mean nothing *listed* changed. Covered: datasets
    (names, version counts, latest versions, rules), models (aliases, policy, description, tags,
    and the request's model appearing), the request's model's versions (status, tags, description),
    deployments (names; the named one's follow, strategy, config, hosts), training jobs (count),
    evaluations of the request's model version (count), monitor rules and retraining policy of the
    request's deployment. Not covered: objects in the object store, events published, labels sent.
    """

    def __init__(self, caller: Caller, rpcs_by_label: Mapping[str, Rpc]) -> None:
        self.caller = caller
        self.by = {(r.service, r.method): r for r in rpcs_by_label.values()}

    def _call(self, service: str, method: str, values: dict[str, Any]) -> Message | tuple[str, str]:
        rpc = self.by[(service, method)]
        out = self.caller.call(rpc, build(rpc.request, values))
        return out.responses[0] if out.code == OK else _err(out.code)

    def datasets(self, req: Message | None) -> Any:
        r = self._call("DataService", "ListDatasets", {})
        if isinstance(r, tuple):
            return r
        return sorted((d.name, d.version_count, d.latest_version_id, d.rules_json) for d in r.datasets)

    def models(self, req: Message | None) -> Any:
        r = self._call("RegistryService", "ListModels", {})
        if isinstance(r, tuple):
            return r
        name = getattr(req, "model_name", "") or getattr(req, "name", "")
        out: dict[str, Any] = {
            m.name: (sorted(m.aliases.items()), m.policy.SerializeToString(), m.description, sorted(m.tags.items()))
            for m in r.models
        }
        versions: Any = self._call("RegistryService", "ListModelVersions", {"model_name": name}) if name else None
        if versions is not None and not isinstance(versions, tuple):
            versions = {v.version: (v.status, v.description, sorted(v.tags.items())) for v in versions.versions}
        return _Grows({"models": out, "versions": versions, "named model exists": name in out})

    def deployments(self, req: Message | None) -> Any:
        """The named deployment's settings, and which deployments exist.

        Not its target version: a deployment that follows an alias moves on its own when another
        fuzzed request (SetAlias) moves the alias, which is no write of the refused request.
        """
        r = self._call("DeploymentService", "ListDeployments", {})
        if isinstance(r, tuple):
            return r
        name = getattr(req, "name", "")
        return {
            d.name: (d.follow, d.strategy, d.config.SerializeToString(), tuple(d.hosts)) if d.name == name else None
            for d in r.deployments
        }

    def jobs(self, req: Message | None) -> Any:
        r = self._call("TrainingService", "ListTrainingJobs", {"limit": 100_000})
        return r if isinstance(r, tuple) else len(r.jobs)

    def evaluations(self, req: Message) -> Any:
        r = self._call(
            "EvaluationService", "ListEvaluations", {"model_name": req.model_name, "model_version": req.model_version}
        )
        return r if isinstance(r, tuple) else len(r.evaluations)

    def rules(self, req: Message) -> Any:
        r = self._call("MonitorService", "ListRules", {"deployment": req.deployment})
        return r if isinstance(r, tuple) else r.SerializeToString(deterministic=True)

    def retraining(self, req: Message) -> Any:
        r = self._call("MonitorService", "GetRetrainingPolicy", {"deployment": req.policy.deployment})
        return r if isinstance(r, tuple) else r.SerializeToString(deterministic=True)

    def for_method(self, method: str) -> Callable[[Any], Any] | None:
        return {
            "UploadDataset": self.datasets,
            "UpdateSchema": self.datasets,
            "SetValidationRules": self.datasets,
            "ApplyRecipe": self.datasets,
            "DeleteDataset": self.datasets,
            "SplitVersion": self.datasets,
            "SetAlias": self.models,
            "DeleteAlias": self.models,
            "SetPromotionPolicy": self.models,
            "UpdateModel": self.models,
            "UpdateModelVersion": self.models,
            "Deploy": self.deployments,
            "Rollback": self.deployments,
            "DeleteDeployment": self.deployments,
            "SubmitTraining": self.jobs,
            "Evaluate": self.evaluations,
            "SetRules": self.rules,
            "SetRetrainingPolicy": self.retraining,
        }.get(method)


# -- findings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    rpc: str
    field: str
    what: str
    message: str
    example: str

    def line(self) -> str:
        return f"{self.rpc} [{self.field}] {self.what}: {self.message!r} e.g. {self.example}"


def message_prefix(details: str, limit: int = 80) -> str:
    """The start of a status message with values blurred, so one bug is one finding."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", details.replace("\n", " "))
    text = re.sub(r"\d+", "#", text)
    return text[:limit]


@dataclass
class Fuzzer:
    """Sends requests, applies the oracles, and keeps the findings and the counts."""

    caller: Caller
    probes: Probes
    secrets: tuple[str, ...] = ()
    sent: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    findings: dict[tuple[str, str, str, str], Finding] = field(default_factory=dict)
    repeats: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    slow: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)

    def record(self, rpc: Rpc, where: str, what: str, details: str, example: Any) -> None:
        key = (rpc.label, where, what, message_prefix(details))
        self.repeats[key] += 1
        self.findings.setdefault(key, Finding(rpc.label, where, what, details[:200], cut(example)))

    def send(self, rpc: Rpc, where: str, example: Any, request: Message | list[Message]) -> Outcome:
        size = request.ByteSize() if isinstance(request, Message) else max((r.ByteSize() for r in request), default=0)
        if size > MAX_REQUEST_BYTES:
            self.codes["(not sent: a message over 48 MiB)"] += 1
            return Outcome(OK, "", [], 0.0)
        probe = self.probes.for_method(rpc.method)
        probe_req = request if isinstance(request, Message) else None  # a stream: the probe reads no field
        before = probe(probe_req) if probe else None
        outcome = self.caller.call(rpc, request)
        self.seconds[rpc.label] += outcome.seconds
        self.sent += 1
        self.codes[outcome.code.name + (" (by the fuzzer)" if outcome.cancelled_by_us else "")] += 1
        if slow(outcome):
            self.slow[rpc.label] += 1
        what = problem(outcome, self.secrets)
        if what:
            self.record(rpc, where, what, outcome.details, example)
        if probe and outcome.code not in (OK, grpc.StatusCode.DEADLINE_EXCEEDED) and not outcome.cancelled_by_us:
            after = probe(probe_req)
            if before != after and not _probe_failed(before, after):
                self.record(
                    rpc, where, f"stored something, then refused with {outcome.code.name}", outcome.details, example
                )
        return outcome

    def report(self) -> str:
        lines = [f"{self.sent} requests; codes: {dict(sorted(self.codes.items()))}"]
        slowest = ", ".join(f"{label} {s:.1f} s" for label, s in self.seconds.most_common(4))
        lines.append(f"most time in: {slowest}")
        if self.slow:
            lines.append(f"ran into the {DEADLINE_S:.0f} s deadline: {dict(self.slow)}")
        for key, finding in sorted(self.findings.items()):
            lines.append(f"  {finding.line()}  (x{self.repeats[key]})")
        return "\n".join(lines)


def _probe_failed(before: Any, after: Any) -> bool:
    """A probe call that itself failed transiently says nothing about the store."""
    transient = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN"}
    return any(isinstance(x, tuple) and len(x) == 2 and x[0] == "error" and x[1] in transient for x in (before, after))


def requests_of(rpc: Rpc, stream: list[dict[str, Any]]) -> list[Message]:
    return [build(rpc.request, part) for part in stream]


def chunked(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
