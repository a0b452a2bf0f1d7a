"""Model artifacts: a signed zip holding the serialised model and its signature.

An artifact is the zip of :func:`pack` inside the Ed25519 envelope of
:mod:`lepton_ml.signing` (:func:`seal`, where artifacts are made). Every loader goes
through :func:`unpack_files`, which checks the signature against the trusted public
keys before a byte of the zip is read, then allows only the exact file names of
:data:`BUNDLE_FILES`. No pickle anywhere: models are written with skops and loaded only
when every type skops does not trust itself is named, exactly, in :data:`TRUSTED_TYPES`.
Artifacts are stored under their content digest; skops names arrays by object id, so two
trainings of the same model are two artifacts.
"""

from __future__ import annotations

import functools
import io
import json
import platform
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from lepton_core.errors import DataIntegrityError, FailedPrecondition
from lepton_ml.signing import Signer, TrustedKeys, verify

MODEL_FILE = "model.skops"
SIGNATURE_FILE = "signature.json"
#: Present when the model was trained on a recipe-made dataset version: the recipes
#: (with their fitted parameters) that turn raw input rows into the model's features.
PREPROCESS_FILE = "preprocess.json"
#: The weights file of a torch MLP bundle (with architecture.json and model.onnx).
TORCH_WEIGHTS = "model.safetensors"
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)

#: The MLP bundle's architecture and its ONNX serving graph (beside TORCH_WEIGHTS).
TORCH_ARCHITECTURE = "architecture.json"
TORCH_ONNX = "model.onnx"
#: Every name a bundle zip may hold; anything else (a ``model.py``, a folder, a module the
#: Python backend could import) makes the artifact refused, before signing and on load.
BUNDLE_FILES = frozenset({MODEL_FILE, SIGNATURE_FILE, PREPROCESS_FILE, TORCH_WEIGHTS, TORCH_ARCHITECTURE, TORCH_ONNX})
#: What Triton's model folder gets of an artifact: the signed envelope, as stored, under
#: this one name. The serving model verifies it and reads the bundle from it in memory.
ARTIFACT_FILE = "artifact.lepton"

#: The types a model file may hold beyond those skops trusts itself (scikit-learn
#: estimators, numpy arrays, builtin containers): exactly the types the catalogue's
#: algorithms produce (tests/test_trusted_types.py in the trainer trains every one and
#: checks). Exact names, never prefixes, and never a function.
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.tree._tree.Tree",
)


@dataclass(frozen=True)
class Signature:
    """What a model takes and gives, and what made it.

    ``features`` are the columns the estimator sees. ``inputs`` are the raw columns a
    caller sends (name and polars dtype) when a preprocessing chain stands between
    the two; empty when the features are the inputs.
    """

    features: list[str]
    target: str
    task: str
    algorithm: str
    input_dtype: str = "float64"
    libraries: dict[str, str] = field(default_factory=dict)
    inputs: list[dict[str, str]] = field(default_factory=list)

    def numeric_inputs(self) -> list[str]:
        """Inputs sent as the FP64 ``features`` tensor (all of them when there is no chain)."""
        if not self.inputs:
            return list(self.features)
        return [c["name"] for c in self.inputs if not is_text_dtype(c["dtype"])]

    def text_inputs(self) -> list[str]:
        """Inputs sent as the BYTES ``text_features`` tensor."""
        return [c["name"] for c in self.inputs if is_text_dtype(c["dtype"])]


def is_text_dtype(dtype: str) -> bool:
    return dtype in ("String", "Utf8", "Categorical") or dtype.startswith(("Enum", "Categorical"))


@dataclass(frozen=True)
class Preprocess:
    """The recipes, oldest first, that made the training data from raw uploads."""

    recipes: list[dict[str, Any]]
    target: str
    target_dtype: str

    def apply(self, raw: pl.DataFrame) -> pl.DataFrame:
        """Replays every recipe on raw rows with its fitted parameters (never refitting).

        Row-dropping steps are skipped (one prediction per row). Steps may name the
        target, which a caller does not send, so it is added as nulls first.
        """
        from lepton_ml import recipes

        frame = raw
        if self.target not in frame.columns:
            frame = frame.with_columns(pl.lit(None).cast(_polars_dtype(self.target_dtype)).alias(self.target))
        for entry in self.recipes:
            recipe = recipes.Recipe.model_validate(entry["recipe"])
            frame = recipes.transform(frame, recipe, entry["fitted"], serving=True)
        return frame


def _polars_dtype(name: str) -> pl.DataType:
    dtype = getattr(pl, name.split("(")[0], None)
    return dtype() if isinstance(dtype, type) else pl.Float64()


@dataclass(frozen=True)
class Bundle:
    """Everything in an artifact: the estimator, its signature, its preprocessing."""

    model: Any
    signature: Signature
    preprocess: Preprocess | None = None

    def features(self, raw: pl.DataFrame) -> npt.NDArray[np.float64]:
        """The estimator's input matrix for raw rows (the signature's inputs, or its features)."""
        frame = self.preprocess.apply(raw) if self.preprocess is not None else raw
        return frame.select(self.signature.features).to_numpy().astype(np.float64)

    def predict(self, raw: pl.DataFrame) -> npt.NDArray[Any]:
        return np.asarray(self.model.predict(self.features(raw)))


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


def pack(model: Any, signature: Signature, preprocess: Preprocess | None = None) -> bytes:
    """The bundle zip for ``model`` (unsigned): the model's files, its signature and preprocessing.

    :func:`seal` signs it; only a sealed artifact can be loaded.
    """
    import skops.io as sio  # here: reading a signature or serving ONNX never imports scikit-learn

    # A torch MLP brings its own files (safetensors, architecture JSON, ONNX); the rest is skops.
    model_files = model.to_files() if hasattr(model, "to_files") else {MODEL_FILE: sio.dumps(model)}
    files = [*sorted(model_files.items()), (SIGNATURE_FILE, json.dumps(asdict(signature), sort_keys=True).encode())]
    if preprocess is not None:
        files.append((PREPROCESS_FILE, json.dumps(asdict(preprocess), sort_keys=True).encode()))
    return _zip(files)


def seal(bundle_zip: bytes, signer: Signer) -> bytes:
    """The artifact: ``bundle_zip`` checked (:func:`read_zip`) and signed (:mod:`lepton_ml.signing`)."""
    read_zip(bundle_zip)
    return signer.sign(bundle_zip)


def unpack_files(artifact: bytes, trusted: TrustedKeys) -> dict[str, bytes]:
    """The files inside a signed artifact, once its signature checks against ``trusted``.

    Raises:
        DataIntegrityError: Unsigned, tampered, signed by a key not trusted (all refused
            before the zip is opened), or a zip that is not a Lepton bundle.
    """
    return read_zip(verify(artifact, trusted))


def read_zip(bundle_zip: bytes) -> dict[str, bytes]:
    """The files of a bundle zip: exactly the names of :data:`BUNDLE_FILES`, each once."""
    try:
        with zipfile.ZipFile(io.BytesIO(bundle_zip)) as zf:
            names = zf.namelist()
            unknown = sorted(n for n in names if n not in BUNDLE_FILES)
            if unknown or len(set(names)) != len(names):
                allowed = ", ".join(sorted(BUNDLE_FILES))
                raise KeyError(f"it holds {', '.join(unknown) or 'a file twice'}; a bundle holds only {allowed}")
            files = {name: zf.read(name) for name in names}
        if SIGNATURE_FILE not in files or not (MODEL_FILE in files or TORCH_WEIGHTS in files):
            raise KeyError(f"{SIGNATURE_FILE} and a model file are required, found {sorted(files)}")
        return files
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataIntegrityError(f"artifact is not a Lepton model bundle: {exc}") from exc


#: The entry-point group where hosts register custom models (see examples/custom-model).
CUSTOM_MODELS_GROUP = "lepton.models"


@functools.cache
def custom_model_classes() -> dict[str, type]:
    """Custom estimator classes registered on this host, by entry-point name."""
    from importlib.metadata import entry_points

    return {ep.name: ep.load() for ep in entry_points(group=CUSTOM_MODELS_GROUP)}


def trusted_types() -> frozenset[str]:
    """Types a model file may hold: :data:`TRUSTED_TYPES` and the exact classes of custom
    models installed on this host (the operator chose to install them; nothing uploaded
    over the network is ever trusted)."""
    custom = {f"{cls.__module__}.{cls.__qualname__}" for cls in custom_model_classes().values()}
    return frozenset(TRUSTED_TYPES) | custom


def load_model_bytes(model_bytes: bytes) -> Any:
    """Loads a skops model, refusing any type skops does not trust that is not in :func:`trusted_types`.

    Call it only on a model file from :func:`unpack_files` (a verified artifact).
    """
    import skops.io as sio

    untrusted = sio.get_untrusted_types(data=model_bytes)
    refused = sorted(set(untrusted) - trusted_types())
    if refused:
        raise DataIntegrityError(f"model file holds types that are not trusted: {', '.join(refused)}")
    return sio.loads(model_bytes, trusted=untrusted)


def unpack(artifact: bytes, trusted: TrustedKeys) -> tuple[Any, Signature]:
    """The model and signature inside a signed artifact."""
    bundle = load_bundle(artifact, trusted)
    return bundle.model, bundle.signature


def load_bundle(artifact: bytes, trusted: TrustedKeys) -> Bundle:
    """The model, signature and preprocessing chain inside a signed artifact."""
    return bundle_from_files(unpack_files(artifact, trusted))


def signature_of(files: dict[str, bytes]) -> Signature:
    """The signature in an artifact's files (:func:`unpack_files`), without loading the model."""
    return Signature(**json.loads(files[SIGNATURE_FILE]))


def bundle_from_files(files: dict[str, bytes]) -> Bundle:
    """The bundle from a verified artifact's files (:func:`unpack_files`)."""
    signature = signature_of(files)
    preprocess = Preprocess(**json.loads(files[PREPROCESS_FILE])) if PREPROCESS_FILE in files else None
    return Bundle(load_model_files(files), signature, preprocess)


def load_model_files(files: dict[str, bytes]) -> Any:
    """The estimator from a bundle's files: skops for scikit-learn, safetensors for the MLP."""
    if MODEL_FILE in files:
        return load_model_bytes(files[MODEL_FILE])
    try:
        from lepton_ml.mlp import MLPModel
    except ModuleNotFoundError as exc:
        # torch is optional (lepton-ml[torch]): say what to install, not only what is missing.
        if (exc.name or "").partition(".")[0] not in ("torch", "safetensors"):
            raise
        raise FailedPrecondition(
            f"this model is a torch MLP and loading it needs {exc.name}, which is not installed: "
            "pip install 'lepton-ml[torch]'"
        ) from exc
    return MLPModel.from_files(files)
