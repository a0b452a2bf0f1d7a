"""The deployer's errors: a rollout step that failed, and what a Triton host answered instead of a result.

``LeptonError``
 ├── ``RolloutFailed``: a rollout step failed; the rollout is rolled back with its message.
 ├── ``HostError``: a Triton host failed a request (unreachable, a load it refused, an unknown model).
 ├── ``FailedPrecondition``
 │    └── ``HostNotInPool``: a deployment's host is in no host pool entry open to its tenant.
 └── ``MalformedAnswer``: a host answered an inference with a tensor its data does not fill.
"""

from __future__ import annotations

from lepton_core.errors import LeptonError
from lepton_core.triton_pool import HostNotInPool as HostNotInPool  # the pool's, raised by the deployer


class RolloutFailed(LeptonError):
    """A rollout step failed; the message says which and on which host."""


class HostError(LeptonError):
    """A Triton host failed a request.

    The message reads as tritonclient prints the error (``[status] detail``).

    Attributes:
        url: The host's gRPC address.
        detail: Triton's own words, without the status.
        status: Triton's status (a gRPC code), when it gave one.
    """

    def __init__(self, url: str, detail: str, status: str | None = None) -> None:
        self.url = url
        self.detail = detail
        self.status = status
        super().__init__(detail if status is None else f"[{status}] {detail}")


class MalformedAnswer(LeptonError):
    """A host answered, but its output tensor's data does not fill the shape it declares.

    The message is numpy's, from reading the tensor.
    """


def describe(exc: BaseException) -> str:
    """What went wrong, for a rollout's reason or a host's state: a Lepton error's message, else type and text."""
    return exc.message if isinstance(exc, LeptonError) else f"{type(exc).__name__}: {exc}"
