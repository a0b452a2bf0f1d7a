"""Models and versions in JetStream KV, with compare-and-set on every change.

Keys in bucket ``models``: ``<tenant>.m.<name>`` (the model), ``<tenant>.m.<name>.v.<n>``
(version n) and ``<tenant>.job.<job_id>`` (which version a training job became, so a
redelivered event registers nothing twice).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, Field, ValidationError

from lepton_core.bounds import check_version
from lepton_core.bus import ObjectRefRecord
from lepton_core.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound
from lepton_core.names import check_id, check_name, shown
from lepton_core.store import R, Store
from lepton_core.wire import now
from lepton_ml.scoring import SCORERS

log = logging.getLogger(__name__)

#: Version statuses: a registered version is ``ready``; ``archived`` keeps it (and its
#: lineage) but it can no longer take an alias.
STATUSES = ("ready", "archived")
#: A tag key: richer than a name (``team``, ``app.kubernetes.io/part-of``), matched in full.
#: Tags live inside records, never in a KV key or subject.
TAG_KEY_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}"
TAG_KEY_RE = re.compile(TAG_KEY_PATTERN)
MAX_TAGS = 50
MAX_TAG_VALUE = 512
MAX_DESCRIPTION = 8192
#: Longest free-text search filter (algorithm, task, metric, name substring).
MAX_FILTER = 128
#: Metrics a promotion policy may compare on: the supervised scores of :mod:`lepton_ml.scoring`,
#: the table the evaluator compares with (``silhouette`` scores one model, it cannot compare two).
POLICY_METRICS = tuple(sorted(name for name, scorer in SCORERS.items() if scorer.supervised))
#: Largest ``min_improvement``: in the metric's units, so loose enough for an MSE in dollars.
MAX_MIN_IMPROVEMENT = 1e12


def check_tag_key(key: str, field: str) -> str:
    """``key`` if it is a tag key (:data:`TAG_KEY_PATTERN`, matched in full), else InvalidArgument."""
    if not TAG_KEY_RE.fullmatch(key):
        raise InvalidArgument(
            f"tag key {shown(key)} must be 1-128 letters, digits or '_.:/-', starting with a letter or digit",
            field=field,
        )
    return key


def check_tag_value(key: str, value: str, field: str) -> str:
    if len(value) > MAX_TAG_VALUE:
        raise InvalidArgument(f"tag {key!r}: value longer than {MAX_TAG_VALUE} characters", field=field)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidArgument(f"tag {key!r}: the value holds a control character: {shown(value)}", field=field)
    return value


def check_model_name(name: str, field: str = "model_name") -> str:
    if not name:
        raise InvalidArgument("a model name is required", field=field)
    return check_name(name, field, what="a model name")


def check_alias(alias: str, field: str = "alias") -> str:
    if not alias:
        raise InvalidArgument("an alias is required", field=field)
    return check_name(alias, field, what="an alias")


class ModelRecord(BaseModel):
    tenant: str
    name: str
    latest_version: int
    created_at: datetime
    description: str = ""
    task: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    updated_at: datetime | None = None


class VersionRecord(BaseModel):
    tenant: str
    model_name: str
    version: int
    dataset_id: str
    dataset_version_id: str
    training_job_id: str
    evaluation_id: str
    artifact: ObjectRefRecord
    algorithm: str
    params: dict[str, str]
    metrics: dict[str, float]
    features: list[str]
    target: str
    created_at: datetime
    dataset_object: ObjectRefRecord | None = None
    split_seed: int = 42
    test_fraction: float = 0.2
    task: str = ""
    inputs: list[dict[str, str]] = Field(default_factory=list)
    plots: list[str] = Field(default_factory=list)
    status: str = "ready"
    tags: dict[str, str] = Field(default_factory=dict)
    description: str = ""
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Edit:
    """A change to a model's or a version's metadata; None / empty means unchanged."""

    description: str | None = None
    set_tags: dict[str, str] = field(default_factory=dict)
    remove_tags: tuple[str, ...] = ()
    status: str = ""

    def check(self) -> None:
        if self.description is not None and len(self.description) > MAX_DESCRIPTION:
            raise InvalidArgument(
                f"at most {MAX_DESCRIPTION} characters, got {len(self.description)}", field="description"
            )
        if len(self.set_tags) > MAX_TAGS:
            raise InvalidArgument(f"at most {MAX_TAGS} tags, got {len(self.set_tags)}", field="set_tags")
        if len(self.remove_tags) > MAX_TAGS:
            raise InvalidArgument(f"at most {MAX_TAGS} tags, got {len(self.remove_tags)}", field="remove_tags")
        for key, value in self.set_tags.items():
            check_tag_key(key, "set_tags")
            check_tag_value(key, value, "set_tags")
        for key in self.remove_tags:
            check_tag_key(key, "remove_tags")
        both = set(self.set_tags) & set(self.remove_tags)
        if both:
            raise InvalidArgument(f"tags both set and removed: {sorted(both)}", field="remove_tags")
        if self.status and self.status not in STATUSES:
            raise InvalidArgument(f"must be one of {list(STATUSES)}, got {self.status!r}", field="status")

    def tags(self, current: dict[str, str]) -> dict[str, str]:
        out = {k: v for k, v in current.items() if k not in self.remove_tags}
        out.update(self.set_tags)
        if len(out) > MAX_TAGS:
            raise InvalidArgument(f"at most {MAX_TAGS} tags, this would make {len(out)}", field="set_tags")
        return out

    def changed(self, before: BaseModel, after: BaseModel) -> list[str]:
        return [
            name
            for name in ("description", "tags", "status")
            if getattr(before, name, None) != getattr(after, name, None)
        ]


class AliasRecord(BaseModel):
    tenant: str
    model_name: str
    alias: str
    version: int
    previous_version: int = 0
    updated_at: datetime


class PolicyRecord(BaseModel):
    """How a model's champion is chosen; no record means: compare, never auto-promote."""

    metric: str = ""
    min_improvement: float = 0.0
    require_significant: bool = False
    auto_promote: bool = False

    def check(self) -> PolicyRecord:
        """This policy if it can be stored and read back; else InvalidArgument naming the field."""
        if self.metric and self.metric not in POLICY_METRICS:
            raise InvalidArgument(
                f"unknown metric {shown(self.metric)}; use one of {', '.join(POLICY_METRICS)} "
                "(or empty for the task's headline metric)",
                field="policy.metric",
            )
        if not (math.isfinite(self.min_improvement) and 0 <= self.min_improvement <= MAX_MIN_IMPROVEMENT):
            raise InvalidArgument(
                f"must be a finite number from 0 to {MAX_MIN_IMPROVEMENT:g}, got {self.min_improvement}",
                field="policy.min_improvement",
            )
        return self


MAX_PAGE = 500


@dataclass(frozen=True)
class SearchQuery:
    name_contains: str = ""
    alias: str = ""
    dataset_version_id: str = ""
    algorithm: str = ""
    metric: str = ""
    min_value: float | None = None
    max_value: float | None = None
    page_size: int = 50
    page_token: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    task: str = ""
    status: str = ""


class JobIndex(BaseModel):
    model_name: str
    version: int


class Registry:
    def __init__(
        self,
        models: Store[ModelRecord],
        versions: Store[VersionRecord],
        jobs: Store[JobIndex],
        aliases: Store[AliasRecord],
        policies: Store[PolicyRecord],
    ) -> None:
        self._models = models
        self._versions = versions
        self._jobs = jobs
        self._aliases = aliases
        self._policies = policies

    async def policy(self, tenant: str, name: str) -> PolicyRecord:
        """The model's promotion policy (the default when none is set).

        A policy stored before its values were checked (``min_improvement`` NaN, stored as
        null) is FailedPrecondition saying how to fix it, never an internal error.
        """
        check_model_name(name)
        fix = "set it again with SetPromotionPolicy"
        try:
            found = await self._policies.get(f"{tenant}.policy.{name}")
        except ValidationError as exc:
            fields = sorted({".".join(str(part) for part in e["loc"]) for e in exc.errors()})
            what = (
                "has min_improvement NaN (stored as null)"
                if fields == ["min_improvement"]
                else f"cannot be read ({', '.join(fields) or 'its record'} not valid)"
            )
            raise FailedPrecondition(f"the promotion policy of model {name!r} {what}; {fix}", field="policy") from None
        if found is None:
            return PolicyRecord()
        if not math.isfinite(found.value.min_improvement):
            raise FailedPrecondition(
                f"the promotion policy of model {name!r} has min_improvement {found.value.min_improvement}; {fix}",
                field="policy",
            )
        return found.value

    async def policy_or_default(self, tenant: str, name: str) -> PolicyRecord:
        """The policy, or (logged) the default one, which never auto-promotes, if it cannot be read."""
        try:
            return await self.policy(tenant, name)
        except FailedPrecondition as exc:
            log.warning("using the default promotion policy: %s", exc)
            return PolicyRecord()

    async def set_policy(self, tenant: str, name: str, policy: PolicyRecord) -> PolicyRecord:
        policy.check()
        await self.get_model(tenant, name)
        await self._policies.put(f"{tenant}.policy.{name}", policy)
        return policy

    async def champion(self, tenant: str, name: str) -> VersionRecord | None:
        found = await self._aliases.get(f"{tenant}.alias.{name}.champion")
        return await self.get_version(tenant, name, found.value.version) if found else None

    async def set_alias(self, tenant: str, name: str, alias: str, version: int, expected: int | None) -> AliasRecord:
        """Points ``alias`` at ``version``; with ``expected``, only if it still points there.

        One compare-and-set on the alias's key: of two racing moves from the same
        state exactly one wins; the other gets :class:`Conflict` (ABORTED).
        """
        check_model_name(name)
        check_alias(alias)
        check_version(version)
        if expected is not None:
            check_version(expected, "expected_version", zero="the alias points at no version")
        target = await self.get_version(tenant, name, version)
        if target.status != "ready":
            raise FailedPrecondition(f"version {version} of {name} is {target.status}; it cannot take an alias")
        key = f"{tenant}.alias.{name}.{alias}"
        current = await self._aliases.get(key)
        now_at = current.value.version if current is not None else 0
        if expected is not None and expected != now_at:
            raise Conflict(
                f"alias {alias!r} of {name} points at version {now_at}, not {expected}", field="expected_version"
            )
        record = AliasRecord(
            tenant=tenant, model_name=name, alias=alias, version=version, previous_version=now_at, updated_at=now()
        )
        if current is None:
            await self._aliases.create(key, record)
        else:
            await self._aliases.update(key, record, current.revision)
        return record

    async def delete_alias(self, tenant: str, name: str, alias: str) -> AliasRecord:
        check_model_name(name)
        check_alias(alias)
        key = f"{tenant}.alias.{name}.{alias}"
        current = await self._aliases.require(key, f"alias {alias!r} of model {name!r}")
        await self._aliases.delete(key)
        return current.value.model_copy(update={"version": 0, "previous_version": current.value.version})

    async def aliases(self, tenant: str, name: str) -> dict[str, int]:
        check_model_name(name)
        return {a.alias: a.version for a in await self._aliases.values(f"{tenant}.alias.{name}.*")}

    async def resolve_alias(self, tenant: str, name: str, alias: str) -> int:
        check_model_name(name)
        check_alias(alias)
        found = await self._aliases.get(f"{tenant}.alias.{name}.{alias}")
        if found is None:
            raise NotFound(f"model {name!r} has no alias {alias!r}", field="alias")
        return found.value.version

    async def register(self, draft: VersionRecord) -> tuple[VersionRecord, bool]:
        """Adds ``draft`` as the model's next version. Returns it and whether it is new.

        The version number comes from a compare-and-set on the model record, so two
        registrations racing for the same model get different numbers.
        """
        tenant, job_id = draft.tenant, draft.training_job_id
        check_name(tenant, "tenant", what="a tenant name")
        check_model_name(draft.model_name)
        check_id(job_id, "lineage.training_job_id", "job")
        existing = await self._jobs.get(f"{tenant}.job.{job_id}")
        if existing is not None:
            return await self.get_version(tenant, existing.value.model_name, existing.value.version), False
        number = await self._next_version(tenant, draft.model_name, draft.task)
        record = draft.model_copy(update={"version": number, "created_at": now()})
        await self._versions.create(f"{tenant}.m.{draft.model_name}.v.{number}", record)
        await self._jobs.put(f"{tenant}.job.{job_id}", JobIndex(model_name=draft.model_name, version=number))
        return record, True

    async def _next_version(self, tenant: str, name: str, task: str) -> int:
        key = f"{tenant}.m.{name}"
        for _ in range(50):
            current = await self._models.get(key)
            try:
                if current is None:
                    at = now()
                    await self._models.create(
                        key,
                        ModelRecord(
                            tenant=tenant, name=name, latest_version=1, created_at=at, updated_at=at, task=task
                        ),
                    )
                    return 1
                number = current.value.latest_version + 1
                await self._models.update(
                    key, current.value.model_copy(update={"latest_version": number}), current.revision
                )
                return number
            except Conflict:
                await asyncio.sleep(0.01)
        raise Conflict(f"model {name} is being changed too often; try again")

    async def update_model(self, tenant: str, name: str, edit: Edit) -> tuple[ModelRecord, list[str]]:
        """Applies ``edit`` to the model with compare-and-set (retried on a concurrent change)."""
        check_model_name(name, "name")
        edit.check()
        if edit.status:
            raise InvalidArgument("models have no status; versions do", field="status")

        def change(m: ModelRecord) -> ModelRecord:
            update: dict[str, object] = {"tags": edit.tags(m.tags)}
            if edit.description is not None:
                update["description"] = edit.description
            return m.model_copy(update=update)

        return await _edit(self._models, f"{tenant}.m.{name}", f"model {name!r}", change, edit)

    async def update_version(self, tenant: str, name: str, version: int, edit: Edit) -> tuple[VersionRecord, list[str]]:
        """Applies ``edit`` to a version; archiving one an alias points at is refused."""
        check_model_name(name)
        check_version(version)
        edit.check()
        await self.get_version(tenant, name, version)
        if edit.status == "archived":
            pointing = sorted(a for a, v in (await self.aliases(tenant, name)).items() if v == version)
            if pointing:
                raise FailedPrecondition(
                    f"version {version} of {name} is aliased as {', '.join(pointing)}; move the alias first"
                )

        def change(v: VersionRecord) -> VersionRecord:
            update: dict[str, object] = {"tags": edit.tags(v.tags)}
            if edit.description is not None:
                update["description"] = edit.description
            if edit.status:
                update["status"] = edit.status
            return v.model_copy(update=update)

        key = f"{tenant}.m.{name}.v.{version}"
        return await _edit(self._versions, key, f"version {version} of model {name!r}", change, edit)

    async def deletable(self, tenant: str, name: str, version: int) -> tuple[VersionRecord, bool]:
        """The version to delete, and whether its artifact is its alone (no other version has it).

        Raises:
            NotFound: no such version.
            FailedPrecondition: an alias points at it, naming the aliases.
        """
        check_model_name(name)
        check_version(version)
        record = await self.get_version(tenant, name, version)
        pointing = sorted(a for a, v in (await self.aliases(tenant, name)).items() if v == version)
        if pointing:
            raise FailedPrecondition(
                f"version {version} of {name} is aliased as {', '.join(pointing)}; move or delete the alias first",
                field="version",
            )
        shared = any(
            v.artifact.name == record.artifact.name and (v.model_name, v.version) != (name, version)
            for v in await self._versions.values(f"{tenant}.m.*.v.*")
        )
        return record, not shared

    async def erase_version(self, record: VersionRecord) -> None:
        """Erases a version's record with its history.

        The model's record stays, so a later version never takes a deleted one's number, and
        so does the training job's index entry (job id -> model and number, no data of it): a
        redelivered evaluation of that job finds it and registers nothing again.
        """
        await self._versions.erase(f"{record.tenant}.m.{record.model_name}.v.{record.version}")

    async def get_model(self, tenant: str, name: str) -> ModelRecord:
        check_model_name(name)
        return (await self._models.require(f"{tenant}.m.{name}", f"model {name!r}")).value

    async def list_models(self, tenant: str) -> list[ModelRecord]:
        return await self._models.values(f"{tenant}.m.*")

    async def get_version(self, tenant: str, name: str, version: int = 0) -> VersionRecord:
        """Version ``version`` of the model; 0 (absent) is the latest, a negative number is refused."""
        check_model_name(name)
        if check_version(version, zero="the latest") == 0:
            version = (await self.get_model(tenant, name)).latest_version
        found = await self._versions.get(f"{tenant}.m.{name}.v.{version}")
        if found is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return found.value

    async def search(self, tenant: str, query: SearchQuery) -> tuple[list[VersionRecord], str]:
        """Versions matching ``query`` in (model, version) order, and the next page's token."""
        if not 1 <= query.page_size <= MAX_PAGE:
            raise InvalidArgument(f"must be between 1 and {MAX_PAGE}, got {query.page_size}", field="page_size")
        try:
            offset = int(query.page_token or 0)
        except ValueError:
            raise InvalidArgument("not a token this call returned", field="page_token") from None
        if query.status and query.status not in STATUSES:
            raise InvalidArgument(f"must be one of {list(STATUSES)} or empty, got {query.status!r}", field="status")
        if query.metric == "" and (query.min_value is not None or query.max_value is not None):
            raise InvalidArgument("a metric is needed for a threshold", field="metric")
        if offset < 0:
            raise InvalidArgument("not a token this call returned", field="page_token")
        if query.alias:
            check_alias(query.alias)
        if query.dataset_version_id:
            check_id(query.dataset_version_id, "dataset_version_id", "dv")
        for field_name in ("name_contains", "algorithm", "metric", "task"):
            text = getattr(query, field_name)
            if len(text) > MAX_FILTER:
                raise InvalidArgument(f"at most {MAX_FILTER} characters; got {shown(text)}", field=field_name)
        for bound in ("min_value", "max_value"):
            value = getattr(query, bound)
            if value is not None and math.isnan(value):
                raise InvalidArgument("a threshold cannot be NaN", field=bound)
        if len(query.tags) > MAX_TAGS:
            raise InvalidArgument(f"at most {MAX_TAGS} tags, got {len(query.tags)}", field="tags")
        for key, value in query.tags:
            check_tag_key(key, "tags")
            check_tag_value(key, value, "tags")
        found = await self._versions.values(f"{tenant}.m.*.v.*")
        models = {m.name: m for m in await self.list_models(tenant)} if query.tags or query.task else {}
        if query.alias:
            pointed = {(a.model_name, a.version) for a in await self._aliases.values(f"{tenant}.alias.*.{query.alias}")}
            found = [v for v in found if (v.model_name, v.version) in pointed]

        def keep(v: VersionRecord) -> bool:
            if query.name_contains not in v.model_name:
                return False
            if query.dataset_version_id and v.dataset_version_id != query.dataset_version_id:
                return False
            if query.algorithm and v.algorithm != query.algorithm:
                return False
            if query.status and v.status != query.status:
                return False
            model = models.get(v.model_name)
            if query.task and (v.task or (model.task if model else "")) != query.task:
                return False
            for tag, wanted in query.tags:
                if v.tags.get(tag) != wanted and (model is None or model.tags.get(tag) != wanted):
                    return False
            if query.metric:
                value = v.metrics.get(query.metric)
                if value is None:
                    return False
                if query.min_value is not None and value < query.min_value:
                    return False
                if query.max_value is not None and value > query.max_value:
                    return False
            return True

        matches = sorted((v for v in found if keep(v)), key=lambda v: (v.model_name, v.version))
        page = matches[offset : offset + query.page_size]
        more = offset + query.page_size < len(matches)
        return page, str(offset + query.page_size) if more else ""

    async def list_versions(self, tenant: str, name: str) -> list[VersionRecord]:
        await self.get_model(tenant, name)
        return sorted(await self._versions.values(f"{tenant}.m.{name}.v.*"), key=lambda v: v.version)


async def _edit(
    store: Store[R], key: str, what: str, change: Callable[[R], R], edit: Edit, attempts: int = 20
) -> tuple[R, list[str]]:
    """Read, change, compare-and-set; a concurrent writer makes it read again (never lost updates)."""
    for _ in range(attempts):
        current = await store.require(key, what)
        changed = change(current.value)
        names = edit.changed(current.value, changed)
        if not names:
            return current.value, []
        changed = changed.model_copy(update={"updated_at": now()})
        try:
            await store.update(key, changed, current.revision)
            return changed, names
        except Conflict:
            await asyncio.sleep(0.01)
    raise Conflict(f"{what} is being changed too often; try again")
