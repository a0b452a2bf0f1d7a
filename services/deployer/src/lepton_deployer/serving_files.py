"""What Triton gets for a version: the signed artifact from the object store, with its backend's extras.

The artifact's signature is checked (:func:`lepton_ml.artifacts.unpack_files`) before a byte of it is
read; the deployer then works with the bundle's files, and Triton gets the signed artifact itself under
:data:`~lepton_ml.artifacts.ARTIFACT_FILE`, which the serving model verifies again before loading it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from lepton_core.bus import ObjectRefRecord
from lepton_deployer.backends import choose_backend
from lepton_deployer.records import VersionInfo
from lepton_deployer.smoke import recorded_rows
from lepton_ml import artifacts
from lepton_ml.signing import TrustedKeys

#: Versions (and backend choices) whose files are kept in memory.
CACHED = 32


class Objects(Protocol):
    """Where artifacts and datasets are read from (:class:`lepton_core.bus.ObjectStore`)."""

    async def get(self, ref: ObjectRefRecord) -> bytes:
        """The object's bytes, checked against its digest."""
        ...


class ServingFiles:
    """Reads each version's bundle once, and chooses its backend once per choice asked for."""

    def __init__(self, objects: Objects, trusted: TrustedKeys) -> None:
        self._objects = objects
        self._trusted = trusted
        self._artifacts: dict[str, dict[str, bytes]] = {}
        self._serving: dict[tuple[str, str], tuple[str, str, dict[str, bytes]]] = {}

    async def bundle(self, info: VersionInfo) -> dict[str, bytes]:
        """The files of the version's artifact, as trained, once its signature checked; and the signed
        artifact itself under :data:`~lepton_ml.artifacts.ARTIFACT_FILE` (the only one Triton gets).

        Raises:
            DataIntegrityError: The artifact is unsigned, altered, signed by an untrusted key, or
                holds a file a bundle may not hold.
        """
        key = info.artifact.digest
        if key not in self._artifacts:
            if len(self._artifacts) >= CACHED:
                self._artifacts.pop(next(iter(self._artifacts)))
            signed = await self._objects.get(info.artifact)
            files = artifacts.unpack_files(signed, self._trusted)
            self._artifacts[key] = {**files, artifacts.ARTIFACT_FILE: signed}
        return self._artifacts[key]

    async def serving(
        self, info: VersionInfo, backend: str, inputs: dict[str, list[Any]]
    ) -> tuple[str, str, dict[str, bytes]]:
        """The backend for a version, why, and the files Triton gets for it (cached per artifact and choice)."""
        key = (info.artifact.digest, backend)
        if key not in self._serving:
            files = await self.bundle(info)
            chosen, why, extra = await asyncio.to_thread(choose_backend, backend, files, inputs)
            if len(self._serving) >= CACHED:
                self._serving.pop(next(iter(self._serving)))
            self._serving[key] = (chosen, why, {**files, **extra})
        return self._serving[key]

    async def recorded_inputs(self, info: VersionInfo, signature: artifacts.Signature) -> dict[str, list[Any]]:
        """Rows of the version's training data to smoke-test with; none when it names no dataset."""
        if info.dataset_object is None:
            return {}
        return recorded_rows(info, await self._objects.get(info.dataset_object), signature)
