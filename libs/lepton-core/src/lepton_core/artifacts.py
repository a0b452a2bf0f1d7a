"""Model artifacts: one zip holding the skops-serialised model and its signature.

No pickle anywhere: models are written with skops and loaded only when every type
inside is on an allow-list. Artifacts are stored under their content digest; skops
names arrays by object id, so two trainings of the same model are two artifacts.
"""

from __future__ import annotations

import io
import json
import platform
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import skops.io as sio

from lepton_core.errors import DataIntegrityError

MODEL_FILE = "model.skops"
SIGNATURE_FILE = "signature.json"
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)

#: Type prefixes a model file may contain; anything else is refused on load.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "builtins.", "collections.", "scipy.sparse.")


@dataclass(frozen=True)
class Signature:
    """What a model takes and gives, and what made it."""

    features: list[str]
    target: str
    task: str
    algorithm: str
    input_dtype: str = "float64"
    libraries: dict[str, str] = field(default_factory=dict)


def library_versions() -> dict[str, str]:
    import sklearn
    import skops

    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "skops": skops.__version__,
    }


def _zip(files: list[tuple[str, bytes]]) -> bytes:
    """A zip whose bytes depend only on the names and contents (fixed timestamps)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def pack(model: Any, signature: Signature) -> bytes:
    """The artifact bytes for ``model``: a zip of the skops model and its signature."""
    return _zip(
        [
            (MODEL_FILE, sio.dumps(model)),
            (SIGNATURE_FILE, json.dumps(asdict(signature), sort_keys=True).encode()),
        ]
    )


def unpack_files(artifact: bytes) -> dict[str, bytes]:
    """The files inside an artifact (what the deployer ships to Triton)."""
    try:
        with zipfile.ZipFile(io.BytesIO(artifact)) as zf:
            return {name: zf.read(name) for name in (MODEL_FILE, SIGNATURE_FILE)}
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataIntegrityError(f"artifact is not a Lepton model bundle: {exc}") from exc


def load_model_bytes(model_bytes: bytes) -> Any:
    """Loads a skops model, refusing any type outside :data:`TRUSTED_PREFIXES`."""
    untrusted = sio.get_untrusted_types(data=model_bytes)
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise DataIntegrityError(f"model file holds types that are not trusted: {', '.join(sorted(refused))}")
    return sio.loads(model_bytes, trusted=untrusted)


def unpack(artifact: bytes) -> tuple[Any, Signature]:
    """The model and signature inside an artifact."""
    files = unpack_files(artifact)
    signature = Signature(**json.loads(files[SIGNATURE_FILE]))
    return load_model_bytes(files[MODEL_FILE]), signature


def holdout_split(n_rows: int, seed: int, test_fraction: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Deterministic train/test row indices: the same n, seed and fraction give the same rows.

    Trainer and evaluator both call this, so the evaluator scores exactly the rows
    the trainer held out.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n_rows)
    n_test = max(1, round(n_rows * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])
