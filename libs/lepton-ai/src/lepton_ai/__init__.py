"""The Lepton SDK: ``import lepton_ai as la``.

>>> import lepton_ai as la
>>> client = la.Client("your_api_key")
>>> dataset = client.datasets.get("your_dataset_id")

Errors are documented in :mod:`lepton_ai.errors`: every failure is a
:class:`LeptonError`, chosen by the platform's gRPC status.
"""

from lepton_ai import models
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
    Unauthenticated,
    Unavailable,
)
from lepton_ai.events import EventStream, PlatformEvent

__all__ = [
    "AsyncClient",
    "AsyncDataset",
    "AsyncModel",
    "Client",
    "Conflict",
    "DataLoss",
    "Dataset",
    "DatasetSummary",
    "EventStream",
    "FailedPrecondition",
    "InvalidArgument",
    "LeptonError",
    "NotFound",
    "PermissionDenied",
    "PlatformEvent",
    "SplitCounts",
    "SplitSpec",
    "Unauthenticated",
    "Unavailable",
    "ValidationReport",
    "Violation",
    "__version__",
    "models",
]

__version__ = "0.1.0"
