"""Artifacts that cannot run code (issue 16, item 3), played as an attacker.

Each attack is planted in front of every loader: the lepton_ml functions the evaluator, monitor
and SDK call, the deployer's serving files, the Triton serving model and the SDK, and each must
refuse it with a clear error before anything is deserialised:

- an unsigned artifact (the bare bundle zip), a tampered one (one byte flipped after signing) and
  one signed by another key are refused before the zip is even opened;
- a signed zip that holds ``model.py`` (a file the Python backend would import), and a signed
  skops file naming ``builtins.eval``, are refused before skops loads a byte of the model.

The end-to-end case forges a version whose artifact was altered after signing and asks the real
platform to roll a serving deployment out to it: the rollout is refused with the reason, and the
deployment keeps serving its version with the same predictions.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import sys
import types
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import skops.io as sio
from lepton.events.v1 import events_pb2
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

import lepton_ai as la
import lepton_ml
from lepton_ai import _artifacts as sdk_artifacts
from lepton_core import events
from lepton_core.bus import ObjectRefRecord, ObjectStore
from lepton_core.errors import DataIntegrityError
from lepton_core.wire import lineage, ref_to_pb
from lepton_deployer.records import VersionInfo
from lepton_deployer.serving_files import ServingFiles
from lepton_evaluator.core import compare, evaluate_artifact
from lepton_ml import artifacts, signing
from lepton_monitor.reference import build_reference
from lepton_platform.demo import PipelineResult
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.testing import admin_connect, artifact_keys

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
#: What each attack must be refused with, and whether the refusal comes before the zip is opened.
ATTACKS: dict[str, tuple[str, bool]] = {
    "unsigned": ("artifact is not signed", True),
    "tampered": ("altered after signing", True),
    "another key": ("not a trusted artifact key", True),
    "model.py in the zip": (r"holds model\.py", False),
    "skops naming builtins.eval": (r"not trusted: builtins\.eval", False),
}


def _frame() -> pl.DataFrame:
    return pl.from_pandas(load_diabetes(as_frame=True).frame)


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _attack(kind: str) -> bytes:
    """The artifact an attacker plants, by kind (the last two signed with the platform's own key)."""
    frame = _frame()
    model = Ridge().fit(frame.select(FEATURES).to_numpy(), frame["target"].to_numpy())
    good = artifacts.pack(model, artifacts.Signature(FEATURES, "target", "regression", "ridge"))
    signer = artifact_keys().signer()
    signature_json = artifacts.read_zip(good)[artifacts.SIGNATURE_FILE]
    if kind == "unsigned":
        return good
    if kind == "tampered":
        sealed = bytearray(signer.sign(good))
        sealed[-40] ^= 0x01  # one byte of the zip, after signing
        return bytes(sealed)
    if kind == "another key":
        return signing.Signer.generate().sign(good)
    if kind == "model.py in the zip":
        evil = {**artifacts.read_zip(good), "model.py": b"import os\nos.system('touch /tmp/pwned')\n"}
        return signer.sign(_zip(evil))
    assert kind == "skops naming builtins.eval"
    return signer.sign(_zip({artifacts.MODEL_FILE: sio.dumps({"f": eval}), artifacts.SIGNATURE_FILE: signature_json}))


@pytest.fixture
def tripwires(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """Arms the tripwires: skops never loads a model; with ``before_zip``, no zip is even opened."""

    def arm(before_zip: bool) -> None:
        def never(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("an untrusted artifact reached the deserialiser")

        monkeypatch.setattr(sio, "loads", never)
        if before_zip:
            monkeypatch.setattr(zipfile, "ZipFile", never)

    return arm


def _parquet(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


class _Objects:
    """An object store holding one artifact (what ServingFiles reads through)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def get(self, ref: ObjectRefRecord) -> bytes:
        return self.data


def _serving_model() -> types.ModuleType:
    """The Triton serving model's module, as the Python backend's stub imports it."""
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    path = Path(lepton_ml.__file__).parent / "triton_model" / "model.py"
    spec = importlib.util.spec_from_file_location("lepton_serving_model_under_attack", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _loaders(blob: bytes, tmp_path: Path) -> Iterator[tuple[str, Callable[[], Any], type[Exception]]]:
    """Every place an artifact is loaded, as (name, the load, the error it must raise)."""
    trusted = artifact_keys().trusted()
    data = _parquet(_frame())
    yield "lepton_ml.artifacts.load_bundle", lambda: artifacts.load_bundle(blob, trusted), DataIntegrityError
    yield (
        "evaluator evaluate_artifact",
        lambda: evaluate_artifact(blob, data, 1, 0.2, trusted=trusted),
        DataIntegrityError,
    )
    yield (
        "evaluator compare",
        lambda: compare(blob, None, data, 1, 0.2, "r2", 0.0, False, trusted=trusted),
        DataIntegrityError,
    )
    info = VersionInfo(
        tenant="default", model_name="m", version=1, artifact=ObjectRefRecord(bucket="a", name="a", digest="d", size=1)
    )
    files = ServingFiles(_Objects(blob), trusted)
    # What a rollout does with a version: its files (signature checked), then the model they hold.
    yield (
        "deployer rollout",
        lambda: artifacts.bundle_from_files(asyncio.run(files.bundle(info))),
        DataIntegrityError,
    )
    yield "SDK load_bundle", lambda: sdk_artifacts.load_bundle(blob, trusted), la.DataLoss
    version_dir = tmp_path / "1"
    version_dir.mkdir(exist_ok=True)
    (version_dir / artifacts.ARTIFACT_FILE).write_bytes(blob)
    serving = _serving_model()

    def triton_load() -> Any:  # what TritonPythonModel.initialize reads, in its order
        bundle_files = serving.read_artifact(str(version_dir))
        return serving.load_estimator(bundle_files[artifacts.MODEL_FILE])

    yield "Triton serving model", triton_load, ValueError


@pytest.mark.parametrize("kind", list(ATTACKS))
def test_every_loader_refuses_each_attack_before_deserialising(
    kind: str, tmp_path: Path, tripwires: Callable[[bool], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    message, before_zip = ATTACKS[kind]
    blob = _attack(kind)
    monkeypatch.setenv(signing.PUBLIC_KEY_ENV, str(artifact_keys().public_key_file))  # as TritonServer sets it
    loaders = list(_loaders(blob, tmp_path))
    tripwires(before_zip)
    refused = []
    for name, load, error in loaders:
        with pytest.raises(error, match=message):
            load()
        refused.append(name)
    assert len(refused) == 6


def test_the_monitor_builds_no_prediction_reference_from_an_attacked_artifact(
    tripwires: Callable[[bool], None],
) -> None:
    frame = _frame()
    tampered = _attack("tampered")
    tripwires(True)
    ref = build_reference(
        tenant="default",
        model_name="m",
        version=1,
        features=FEATURES,
        training=_parquet(frame),
        training_version_id="dv_1",
        artifact=tampered,
        trusted=artifact_keys().trusted(),
    )
    assert ref.prediction is None and "altered after signing" in ref.note


def test_the_triton_model_refuses_to_load_without_a_public_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    signer = artifact_keys().signer()
    frame = _frame()
    model = Ridge().fit(frame.select(FEATURES).to_numpy(), frame["target"].to_numpy())
    (tmp_path / artifacts.ARTIFACT_FILE).write_bytes(
        artifacts.seal(artifacts.pack(model, artifacts.Signature(FEATURES, "target", "regression", "ridge")), signer)
    )
    monkeypatch.delenv(signing.PUBLIC_KEY_ENV, raising=False)
    with pytest.raises(ValueError, match="LEPTON_ARTIFACT_PUBLIC_KEY_FILE is not set"):
        _serving_model().read_artifact(str(tmp_path))
    monkeypatch.setenv(signing.PUBLIC_KEY_ENV, str(artifact_keys().public_key_file))
    files = _serving_model().read_artifact(str(tmp_path))
    assert sorted(files) == [artifacts.MODEL_FILE, artifacts.SIGNATURE_FILE]  # the legitimate path


@pytest.mark.e2e
@pytest.mark.timeout(600)
async def test_a_rollout_to_an_altered_artifact_is_refused_and_the_old_version_keeps_serving(
    platform: EmbeddedPlatform, pipeline: PipelineResult
) -> None:
    name, version = pipeline.model_version.model_name, pipeline.model_version.version
    rows = _frame().drop("target").head(5)
    deployment = f"signed-{uuid.uuid4().hex[:6]}"
    with la.Client(platform.api_key, url=platform.url) as client:
        await asyncio.to_thread(client.deployments.deploy, deployment, name, version)
        before = await asyncio.to_thread(client.deployments.predict, deployment, rows)
        genuine = await asyncio.to_thread(client.models.download, name, version)
    # The attacker (here with the admin's NATS access) alters the signed artifact by one byte, stores
    # it under its own, correct digest, and announces it as a new version of the model.
    altered = bytearray(genuine)
    altered[-100] ^= 0x01
    forged = version + 1000
    nc = await admin_connect(platform.nats_url, "attacker")
    try:
        store = ObjectStore(nc.jetstream())
        ref = await store.put("artifacts", f"{platform.tenant}/forged-{uuid.uuid4().hex}.zip", bytes(altered))
        announced = await events.publish(
            nc.jetstream(),
            events_pb2.ModelVersionCreated(
                tenant=platform.tenant,
                lineage=lineage(model_name=name, model_version=forged, training_job_id="job_forged"),
                artifact=ref_to_pb(ref),
                features=FEATURES,
                target="target",
                algorithm="ridge",
            ),
            tenant=platform.tenant,
            event_id=f"forged:{uuid.uuid4().hex}",
            source="/lepton/attacker",
        )
    finally:
        await nc.close()
    try:
        with la.Client(platform.api_key, url=platform.url) as client:
            record = None
            for _ in range(100):  # until the deployer has seen the forged version
                try:
                    record = await asyncio.to_thread(client.deployments.deploy, deployment, name, forged)
                    break
                except la.NotFound:
                    await asyncio.sleep(0.2)
            assert record is not None, "the deployer never saw the forged version"
            assert record.lineage.model_version == version, record  # the version it served, still
            assert "altered after signing" in record.error, record.error
            after = await asyncio.to_thread(client.deployments.predict, deployment, rows)
        np.testing.assert_array_equal(np.asarray(after), np.asarray(before))
    finally:
        # The session's other tests read every event on the bus as the platform's own (with a trace).
        nc = await admin_connect(platform.nats_url, "attacker-cleanup")
        try:
            await nc.jetstream().delete_msg(announced.stream, announced.seq)
        finally:
            await nc.close()
