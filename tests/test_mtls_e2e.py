"""Mutual TLS: services that require a client certificate from their CA, and call each other with theirs.

Starts the embedded platform with ``mutual_tls=True`` and two services (data, trainer): a
training submission makes the trainer call the data service, presenting its certificate.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc

import lepton_ai as la
from lepton_core.rpc import client_channel
from lepton_core.tls import Peer, certificate_pair, write_self_signed
from lepton_platform.demo import write_diabetes_csv
from lepton_platform.embedded import EmbeddedPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def mtls_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPlatform]:
    p = EmbeddedPlatform(
        tmp_path_factory.mktemp("mtls-platform"),
        api_key=secrets.token_urlsafe(16),
        services=("data", "trainer"),
        triton=False,
        mutual_tls=True,
    )
    p.start()
    try:
        yield p
    finally:
        p.stop()


def test_a_client_with_a_certificate_of_the_ca_is_served_and_services_call_each_other(
    mtls_platform: EmbeddedPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEPTON_TLS_CA_FILE", raising=False)
    p = mtls_platform
    assert p.client_certificate is not None and p.ca_file is not None
    csv = write_diabetes_csv(tmp_path / "mtls.csv")
    with la.Client(p.api_key, p.url, root_certificates=p.ca_file, client_certificate=p.client_certificate) as client:
        dataset = client.datasets.upload(csv, "mtls-diabetes", progress=False)
    # The trainer reads the version from the data service: its own certificate opens that door.
    trainer = Peer(
        p.addresses["trainer"],
        tls=True,
        root_certificates=p.ca_file.read_bytes(),
        client_certificate=certificate_pair(*p.client_certificate),
    )

    async def submit() -> trainer_pb2.TrainingJob:
        async with client_channel(trainer, p.api_key) as ch:
            request = trainer_pb2.SubmitTrainingRequest(
                dataset_version_id=dataset.version_id, algorithm="ridge", target="target"
            )
            job: trainer_pb2.TrainingJob = await trainer_pb2_grpc.TrainingServiceStub(ch).SubmitTraining(request)
            return job

    job = asyncio.run(submit())
    assert job.job_id.startswith("job_")  # planned from the version the data service gave the trainer

    # The async client presents it as well.
    async def listed() -> list[str]:
        async with la.AsyncClient(
            p.api_key, p.url, root_certificates=p.ca_file, client_certificate=p.client_certificate
        ) as client:
            return [d.name for d in await client.datasets.list()]

    assert "mtls-diabetes" in asyncio.run(listed())
    # The same from the environment.
    monkeypatch.setenv("LEPTON_TLS_CERT_FILE", str(p.client_certificate[0]))
    monkeypatch.setenv("LEPTON_TLS_KEY_FILE", str(p.client_certificate[1]))
    with la.Client(p.api_key, p.url, root_certificates=p.ca_file) as client:
        assert "mtls-diabetes" in [d.name for d in client.datasets.list()]


def test_a_client_without_a_certificate_or_with_anothers_never_reaches_a_call(
    mtls_platform: EmbeddedPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEPTON_TLS_CA_FILE", raising=False)
    p = mtls_platform
    other = write_self_signed(tmp_path / "other", client_auth=True)
    for certificate in (None, (other.cert_file, other.key_file)):
        with pytest.raises(la.Unavailable):
            la.Client(p.api_key, p.url, root_certificates=p.ca_file, client_certificate=certificate).datasets.list()
