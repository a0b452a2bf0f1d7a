"""Model artifacts as the SDK reads them: :mod:`lepton_ml.artifacts`, with its refusals as SDK errors.

Every artifact is signed where it is made; each function here checks the signature against the
platform's public keys (``lepton_ai.registry.Models._artifact_keys``) before reading a byte of it.

Imported only when a model is loaded: loading needs skops and scikit-learn (seconds to import),
and torch for an MLP, which a light install leaves out (``lepton-ml[torch]`` brings it).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from lepton_ai.errors import DataLoss, FailedPrecondition
from lepton_core import errors as core_errors

if TYPE_CHECKING:
    from lepton_ml import artifacts
    from lepton_ml.signing import TrustedKeys


def load_bundle(artifact: bytes, trusted: TrustedKeys) -> artifacts.Bundle:
    """The model, signature and preprocessing in a signed artifact.

    Raises:
        DataLoss: The artifact is unsigned, altered after signing, signed by a key the
            platform does not trust, or not a Lepton bundle (refused before it is read).
        FailedPrecondition: The model cannot be loaded here (an MLP without torch; the
            message says what to install).
    """
    from lepton_ml import artifacts

    try:
        return artifacts.load_bundle(artifact, trusted)
    except core_errors.DataIntegrityError as exc:
        raise DataLoss(str(exc)) from None
    except core_errors.FailedPrecondition as exc:
        raise FailedPrecondition(str(exc)) from None


def verify(artifact: bytes, trusted: TrustedKeys) -> None:
    """Raises DataLoss unless ``artifact`` is signed by a trusted key and unaltered since."""
    from lepton_ml import signing

    try:
        signing.verify(artifact, trusted)
    except core_errors.DataIntegrityError as exc:
        raise DataLoss(str(exc)) from None


def signature(artifact: bytes, trusted: TrustedKeys) -> artifacts.Signature:
    """A signed artifact's signature alone: what a deployed model takes, without loading the model."""
    from lepton_ml import artifacts

    try:
        files = artifacts.unpack_files(artifact, trusted)
    except core_errors.DataIntegrityError as exc:
        raise DataLoss(str(exc)) from None
    return artifacts.Signature(**json.loads(files[artifacts.SIGNATURE_FILE]))


def input_columns(signature: artifacts.Signature) -> list[str]:
    """The columns a caller sends: the raw inputs when a recipe chain makes the features."""
    return [c["name"] for c in signature.inputs] or list(signature.features)
