"""Model bundles, their signatures, and the shared hold-out split."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression

from lepton_core.errors import DataIntegrityError, FailedPrecondition
from lepton_ml import artifacts, signing, splits
from lepton_ml.signing import Signer

SIGNER = Signer.generate()
TRUSTED = SIGNER.trusted()


def _model() -> LinearRegression:
    x, y = load_diabetes(return_X_y=True)
    return LinearRegression().fit(x, y)


def _signature() -> artifacts.Signature:
    return artifacts.Signature(features=[f"f{i}" for i in range(10)], target="y", task="regression", algorithm="lr")


def test_pack_seal_round_trips_model_and_signature() -> None:
    model = _model()
    loaded, loaded_sig = artifacts.unpack(artifacts.seal(artifacts.pack(model, _signature()), SIGNER), TRUSTED)
    assert loaded_sig == _signature()
    x, _ = load_diabetes(return_X_y=True)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_the_envelope_is_magic_key_id_signature_then_the_zip() -> None:
    bundle_zip = artifacts.pack(_model(), _signature())
    sealed = artifacts.seal(bundle_zip, SIGNER)
    assert sealed.startswith(signing.MAGIC) and sealed[signing.HEADER_BYTES :] == bundle_zip
    assert sealed[8:16] == signing.key_id(SIGNER.public_key)
    assert artifacts.seal(bundle_zip, SIGNER) == sealed  # Ed25519 is deterministic: same zip, same digest


def test_untrusted_types_are_refused() -> None:
    class Sneaky:
        pass

    with pytest.raises(DataIntegrityError, match="not trusted"):
        artifacts.load_model_bytes(sio.dumps({"x": Sneaky()}))


def test_the_allow_list_names_exact_types_never_prefixes() -> None:
    for name in artifacts.trusted_types():
        assert not name.endswith(".") and name.count(".") >= 1, name
        assert not name.startswith(("builtins.", "numpy.", "collections.", "scipy.")), name


def test_not_a_bundle_is_refused() -> None:
    with pytest.raises(DataIntegrityError, match="not signed"):
        artifacts.unpack(b"just bytes", TRUSTED)
    with pytest.raises(DataIntegrityError, match="not a Lepton model bundle"):
        artifacts.unpack(SIGNER.sign(b"just bytes"), TRUSTED)


def test_a_signed_zip_with_another_file_is_refused_and_cannot_be_sealed() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(artifacts.SIGNATURE_FILE, "{}")
        zf.writestr(artifacts.MODEL_FILE, sio.dumps(LinearRegression()))
        zf.writestr("model.py", "import os; os.system('id')")
    with pytest.raises(DataIntegrityError, match=r"holds model\.py"):
        artifacts.seal(buf.getvalue(), SIGNER)
    with pytest.raises(DataIntegrityError, match=r"holds model\.py"):
        artifacts.unpack_files(SIGNER.sign(buf.getvalue()), TRUSTED)


def test_no_configured_key_refuses_every_artifact() -> None:
    with pytest.raises(FailedPrecondition, match="no artifact public key"):
        artifacts.unpack_files(artifacts.seal(artifacts.pack(_model(), _signature()), SIGNER), signing.TrustedKeys({}))


def test_key_files_private_0600_public_pem_several_keys(tmp_path: Path) -> None:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    signing.write_key_pair(private, public)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    signer = signing.load_signer(private)
    other = Signer.generate()
    public.write_bytes(public.read_bytes() + other.trusted().pem())  # rotation: old and new keys
    trusted = signing.load_public_keys(public)
    assert set(trusted.keys) == {signing.key_id(signer.public_key), signing.key_id(other.public_key)}
    for s in (signer, other):
        assert signing.verify(s.sign(b"payload"), trusted) == b"payload"
    with pytest.raises(FailedPrecondition, match="not set"):
        signing.trusted_from_setting(None, "LEPTON_X_ARTIFACT_PUBLIC_KEY_FILE")
    with pytest.raises(FailedPrecondition, match="no PEM public key"):
        signing.parse_public_keys(b"not a key")


def test_holdout_split_is_deterministic_disjoint_and_complete() -> None:
    train, test = splits.holdout_split(442, 42, 0.2)
    again_train, again_test = splits.holdout_split(442, 42, 0.2)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    assert len(test) == 88 and len(train) == 354
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(range(442))
    _, other = splits.holdout_split(442, 7, 0.2)
    assert not np.array_equal(test, other)
    with pytest.raises(ValueError, match="between 0 and 1"):
        splits.holdout_split(10, 1, 1.5)
