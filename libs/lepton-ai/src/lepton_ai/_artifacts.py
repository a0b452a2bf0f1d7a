"""Model artifacts as the SDK reads them: :mod:`lepton_ml.artifacts`, with its refusals as SDK errors.

Imported only when a model is loaded: loading needs skops and scikit-learn (seconds to import),
and torch for an MLP, which a light install leaves out (``lepton-ml[torch]`` brings it).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from lepton_ai.errors import FailedPrecondition
from lepton_core import errors as core_errors

if TYPE_CHECKING:
    from lepton_ml import artifacts


def load_bundle(artifact: bytes) -> artifacts.Bundle:
    """The model, signature and preprocessing in an artifact.

    Raises:
        FailedPrecondition: The model cannot be loaded here (an MLP without torch; the
            message says what to install).
    """
    from lepton_ml import artifacts

    try:
        return artifacts.load_bundle(artifact)
    except core_errors.FailedPrecondition as exc:
        raise FailedPrecondition(str(exc)) from None


def signature(artifact: bytes) -> artifacts.Signature:
    """An artifact's signature alone: what a deployed model takes, without loading the model."""
    from lepton_ml import artifacts

    files = artifacts.unpack_files(artifact)
    return artifacts.Signature(**json.loads(files[artifacts.SIGNATURE_FILE]))


def input_columns(signature: artifacts.Signature) -> list[str]:
    """The columns a caller sends: the raw inputs when a recipe chain makes the features."""
    return [c["name"] for c in signature.inputs] or list(signature.features)
