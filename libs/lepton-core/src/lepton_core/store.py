"""The record-store interface services keep their state behind, and an in-memory backend.

A :class:`Store` holds typed pydantic records under dotted keys (``tenant.m.name``) and
supports optimistic concurrency: every read returns the record's revision, and
:meth:`Store.update` writes only if the key is still at that revision. Two racing
writers from the same state therefore never both win; the loser gets
:class:`~lepton_core.errors.Conflict`.

Two backends implement it:

* :class:`lepton_core.bus.RecordStore`: a JetStream KV bucket (the platform's default;
  revisions are the bucket stream's sequence numbers, so they survive restarts and
  are shared by every replica of a service);
* :class:`MemoryStore`: a dict in one process, for embedding and for tests of logic
  that does not need the broker. It has the same semantics, down to revisions that
  grow across keys, and the same key patterns.

Another backend (SQL, etcd, ...) implements the five abstract methods; the rest of
the interface is built on them. ``tests/test_store_contract.py`` runs one contract
against every backend.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from lepton_core.errors import Conflict, NotFound

R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class Versioned(Generic[R]):
    """A record and the revision it was read at, for compare-and-set."""

    value: R
    revision: int


def key_matches(pattern: str, key: str) -> bool:
    """NATS subject matching on dotted keys: ``*`` is one token, a final ``>`` the rest."""
    want, have = pattern.split("."), key.split(".")
    for i, token in enumerate(want):
        if token == ">" and i == len(want) - 1:
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(have) == len(want)


class Store(ABC, Generic[R]):
    """Typed records under dotted keys, with compare-and-set writes."""

    @abstractmethod
    async def get(self, key: str) -> Versioned[R] | None:
        """The record and its revision; None when absent or deleted."""

    @abstractmethod
    async def create(self, key: str, value: R) -> int:
        """Writes only if the key is absent (or deleted); :class:`Conflict` otherwise. Returns the revision."""

    @abstractmethod
    async def update(self, key: str, value: R, revision: int) -> int:
        """Writes only if the key is still at ``revision``; :class:`Conflict` otherwise. Returns the new revision."""

    @abstractmethod
    async def put(self, key: str, value: R) -> int:
        """Writes unconditionally. Returns the revision."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Removes a key (absent keys are fine)."""

    @abstractmethod
    async def keys(self, pattern: str) -> list[str]:
        """Keys matching a NATS subject pattern, sorted. A backend may include deleted keys."""

    async def erase(self, key: str) -> None:
        """Removes a key with every earlier revision, leaving nothing of it in the backend.

        A backend that keeps history (JetStream KV) overrides this; one that keeps none
        erases by deleting.
        """
        await self.delete(key)

    async def require(self, key: str, what: str) -> Versioned[R]:
        """The record, or :class:`NotFound` saying ``what`` does not exist."""
        found = await self.get(key)
        if found is None:
            raise NotFound(f"{what} does not exist")
        return found

    async def values(self, pattern: str) -> list[R]:
        """The live records under keys matching ``pattern``, in key order."""
        out: list[R] = []
        for key in await self.keys(pattern):
            found = await self.get(key)
            if found is not None:
                out.append(found.value)
        return out


class MemoryStore(Store[R]):
    """A :class:`Store` in a dict. Records are stored as JSON, so a read never aliases a write."""

    def __init__(self, model: type[R]) -> None:
        self._model = model
        self._data: dict[str, tuple[str, int]] = {}
        self._revision = 0
        self._lock = asyncio.Lock()

    def _next(self) -> int:
        self._revision += 1
        return self._revision

    async def get(self, key: str) -> Versioned[R] | None:
        found = self._data.get(key)
        if found is None:
            return None
        return Versioned(self._model.model_validate_json(found[0]), found[1])

    async def create(self, key: str, value: R) -> int:
        async with self._lock:
            if key in self._data:
                raise Conflict(f"{key} already exists")
            return self._write(key, value)

    async def update(self, key: str, value: R, revision: int) -> int:
        async with self._lock:
            found = self._data.get(key)
            if found is None or found[1] != revision:
                raise Conflict(f"{key} changed concurrently")
            return self._write(key, value)

    async def put(self, key: str, value: R) -> int:
        async with self._lock:
            return self._write(key, value)

    def _write(self, key: str, value: R) -> int:
        revision = self._next()
        self._data[key] = (value.model_dump_json(), revision)
        return revision

    async def delete(self, key: str) -> None:
        async with self._lock:
            self._data.pop(key, None)
            self._next()

    async def keys(self, pattern: str) -> list[str]:
        return sorted(k for k in self._data if key_matches(pattern, k))
