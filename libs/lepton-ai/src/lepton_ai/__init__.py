"""The Lepton SDK: ``import lepton_ai as la``.

>>> import lepton_ai as la
>>> client = la.Client("your_api_key")
>>> dataset = client.datasets.get("your_dataset_id")

Errors are documented in :mod:`lepton_ai.errors`: every failure is a
:class:`LeptonError`, chosen by the platform's gRPC status.

The SDK needs :mod:`lepton_core` (gRPC metadata, tracing) and :mod:`lepton_ml` (predicting
from a downloaded artifact; an MLP needs ``lepton-ml[torch]``), never a service nor the
launchers, except ``lepton up``, from the ``lepton-ai[platform]`` extra. Modules:

- :mod:`lepton_ai.client`, :mod:`lepton_ai.aio`: ``Client`` and ``AsyncClient``.
- :mod:`lepton_ai.datasets` (``client.datasets``), :mod:`lepton_ai.jobs` (``client.jobs``),
  :mod:`lepton_ai.registry` (``client.models``), :mod:`lepton_ai.deployments`,
  :mod:`lepton_ai.monitor`, :mod:`lepton_ai.events` (``client.events``),
  :mod:`lepton_ai.access` (``client.keys``, ``client.whoami()``, ``client.audit()``,
  ``client.usage()``, ``client.plans``).
- :mod:`lepton_ai.models`: ``la.models.<Algorithm>()``, ``fit`` and ``predict``.
- :mod:`lepton_ai.cli`: the ``lepton`` command, one module a command group.
- ``_transport``, ``_progress``, ``_artifacts``, ``_durations``: channels and errors, progress bars,
  artifact loading, durations written as ``"30d"``.
"""

from lepton_ai import models
from lepton_ai.access import (
    AuditRecord,
    AuditTrail,
    CreatedKey,
    KeyInfo,
    LimitUsage,
    PlanInfo,
    Principal,
    TenantDeletion,
    TenantPlan,
    TenantPurge,
    Usage,
)
from lepton_ai.aio import AsyncClient, AsyncDataset, AsyncModel
from lepton_ai.client import Client
from lepton_ai.datasets import Dataset, DatasetSummary, SplitCounts, SplitSpec, ValidationReport, Violation
from lepton_ai.errors import (
    Conflict,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    LeptonError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from lepton_ai.events import DeadLetter, EventStream, PlatformEvent

__all__ = [
    "AsyncClient",
    "AsyncDataset",
    "AsyncModel",
    "AuditRecord",
    "AuditTrail",
    "Client",
    "Conflict",
    "CreatedKey",
    "DataLoss",
    "Dataset",
    "DatasetSummary",
    "DeadLetter",
    "EventStream",
    "FailedPrecondition",
    "InvalidArgument",
    "KeyInfo",
    "LeptonError",
    "LimitUsage",
    "NotFound",
    "PermissionDenied",
    "PlanInfo",
    "PlatformEvent",
    "Principal",
    "ResourceExhausted",
    "SplitCounts",
    "SplitSpec",
    "TenantDeletion",
    "TenantPlan",
    "TenantPurge",
    "Unauthenticated",
    "Unavailable",
    "Usage",
    "ValidationReport",
    "Violation",
    "__version__",
    "models",
]

__version__ = "0.1.0"
