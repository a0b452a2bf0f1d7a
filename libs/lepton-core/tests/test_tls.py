"""TLS on the platform's gRPC: certificates, peer addresses, real servers over loopback."""

from __future__ import annotations

import ipaddress
import re
import stat
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lepton.data.v1 import data_pb2, data_pb2_grpc
from pydantic import ValidationError

from lepton_core.access import Access, KeyBook
from lepton_core.rpc import Server, client_channel, create_server
from lepton_core.settings import ServiceSettings
from lepton_core.tls import Peer, TlsFiles, certificate_pair, read_pem, server_credentials, write_self_signed
from lepton_platform.testing import StartService

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return write_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed nothing this module's servers present."""
    return write_self_signed(tmp_path_factory.mktemp("other-tls")).ca_file


def _no_services(server: grpc.aio.Server) -> Iterable[str]:
    return []


@pytest_asyncio.fixture
async def tls_server(pki: TlsFiles) -> AsyncIterator[Server]:
    server = await create_server(
        service="tls-test",
        host="127.0.0.1",
        port=0,
        access=Access(KeyBook(), {}),
        register=_no_services,
        credentials=server_credentials(pki.cert_file, pki.key_file),
    )
    try:
        yield server
    finally:
        await server.stop(0)


async def _check(target: str | Peer) -> int:
    async with client_channel(target, None) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(resp.status)


def test_the_self_signed_certificate_names_loopback_and_its_key_is_private(pki: TlsFiles) -> None:
    cert = x509.load_pem_x509_certificate(pki.cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert stat.S_IMODE(pki.key_file.stat().st_mode) == 0o600


def test_peer_addresses_say_when_to_use_tls(pki: TlsFiles) -> None:
    assert Peer.parse("127.0.0.1:5") == Peer("127.0.0.1:5")
    assert Peer.parse("grpc://h:5") == Peer("h:5")
    assert Peer.parse("grpcs://h:5/") == Peer("h:5", tls=True)
    assert Peer.parse("dns:///h:5") == Peer("dns:///h:5")  # a gRPC target of its own passes through
    with_ca = Peer.parse("h:5", pki.ca_file)
    assert with_ca.tls and with_ca.root_certificates == pki.ca_file.read_bytes()
    assert str(with_ca) == "grpcs://h:5" and str(Peer("h:5")) == "h:5"
    assert "BEGIN" not in repr(with_ca)  # PEM stays out of logs


def test_settings_take_tls_files_from_the_environment(pki: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_TLS_CERT_FILE", str(pki.cert_file))
    monkeypatch.setenv("LEPTON_TLS_KEY_FILE", str(pki.key_file))
    monkeypatch.setenv("LEPTON_TLS_CA_FILE", str(pki.ca_file))
    settings = ServiceSettings()
    assert settings.tls_cert_file == str(pki.cert_file)
    # The service's own certificate goes with its calls, for peers that require mutual TLS.
    pair = certificate_pair(pki.cert_file, pki.key_file)
    expected = Peer("127.0.0.1:9", tls=True, root_certificates=pki.ca_file.read_bytes(), client_certificate=pair)
    assert settings.peer("127.0.0.1:9") == expected
    assert "PRIVATE" not in repr(expected)
    monkeypatch.setenv("LEPTON_TLS_REQUIRE_CLIENT_CERT", "true")
    assert ServiceSettings().tls_require_client_cert
    monkeypatch.delenv("LEPTON_TLS_CA_FILE")
    with pytest.raises(ValidationError, match="tls_require_client_cert: mutual TLS needs"):
        ServiceSettings()
    monkeypatch.delenv("LEPTON_TLS_REQUIRE_CLIENT_CERT")
    monkeypatch.delenv("LEPTON_TLS_KEY_FILE")
    with pytest.raises(ValidationError, match="tls_cert_file and tls_key_file: set both"):
        ServiceSettings()


def test_bad_tls_files_are_named(pki: TlsFiles, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tls_ca_file: cannot read .*missing\.pem"):
        Peer.parse("h:1", tmp_path / "missing.pem")
    with pytest.raises(ValueError, match=r"tls_cert_file: .* holds no PEM certificate"):
        server_credentials(pki.key_file, pki.key_file)
    with pytest.raises(ValueError, match=r"tls_key_file: .* holds no PEM private key"):
        read_pem(pki.cert_file, "tls_key_file", "PRIVATE KEY")


async def test_a_mutual_tls_server_answers_only_clients_with_a_certificate_of_its_ca(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    ours = write_self_signed(tmp_path_factory.mktemp("mtls"), client_auth=True)
    theirs = write_self_signed(tmp_path_factory.mktemp("mtls-other"), client_auth=True)
    server = await create_server(
        service="mtls-test",
        host="127.0.0.1",
        port=0,
        access=Access(KeyBook(), {}),
        register=_no_services,
        credentials=server_credentials(ours.cert_file, ours.key_file, ours.ca_file),
    )
    try:
        address = f"127.0.0.1:{server.port}"
        good = certificate_pair(ours.cert_file, ours.key_file)
        assert await _check(Peer.parse(address, ours.ca_file, good)) == health_pb2.HealthCheckResponse.SERVING
        for client in (None, certificate_pair(theirs.cert_file, theirs.key_file)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _check(Peer.parse(address, ours.ca_file, client))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_a_tls_server_answers_only_clients_that_trust_its_ca(
    tls_server: Server, pki: TlsFiles, other_ca: Path
) -> None:
    address = f"127.0.0.1:{tls_server.port}"
    assert await _check(Peer.parse(address, pki.ca_file)) == health_pb2.HealthCheckResponse.SERVING
    # A name in the certificate works as well as its IP.
    assert (
        await _check(Peer.parse(f"localhost:{tls_server.port}", pki.ca_file)) == health_pb2.HealthCheckResponse.SERVING
    )

    with pytest.raises(grpc.aio.AioRpcError) as untrusted:
        await _check(Peer.parse(address, other_ca))
    assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in (untrusted.value.details() or "")

    with pytest.raises(grpc.aio.AioRpcError) as system_roots:
        await _check(f"grpcs://{address}")
    assert system_roots.value.code() == grpc.StatusCode.UNAVAILABLE

    with pytest.raises(grpc.aio.AioRpcError) as plaintext:
        await _check(address)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_tls_client_is_refused_by_a_plaintext_server(pki: TlsFiles) -> None:
    server = await create_server(
        service="plain-test", host="127.0.0.1", port=0, access=Access(KeyBook(), {}), register=_no_services
    )
    try:
        address = f"127.0.0.1:{server.port}"
        assert await _check(address) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as mismatch:
            await _check(Peer.parse(address, pki.ca_file))
        assert mismatch.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "WRONG_VERSION_NUMBER" in (mismatch.value.details() or "")
    finally:
        await server.stop(0)


async def test_a_service_process_serves_tls_from_its_settings(service: StartService, pki: TlsFiles) -> None:
    tenant = "tls" + uuid.uuid4().hex[:8]
    address = service("data", {"tls-key": tenant}, tls_cert_file=str(pki.cert_file), tls_key_file=str(pki.key_file))
    async with client_channel(Peer.parse(address, pki.ca_file), "tls-key") as ch:
        listed = await data_pb2_grpc.DataServiceStub(ch).ListDatasets(data_pb2.ListDatasetsRequest(), timeout=10)
    assert list(listed.datasets) == []
    async with client_channel(address, "tls-key") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as plaintext:
            await data_pb2_grpc.DataServiceStub(ch).ListDatasets(data_pb2.ListDatasetsRequest(), timeout=10)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_service_refuses_to_serve_plaintext_beyond_loopback_unless_told() -> None:
    from pydantic import ValidationError
    from pydantic_settings import SettingsConfigDict

    from lepton_core.settings import ServiceSettings

    class Settings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="LEPTON_PLAINTEXT_TEST_", extra="ignore")

    for host in ("0.0.0.0", "10.0.0.5", "lepton.example"):
        with pytest.raises(ValidationError, match=f"grpc_host: {re.escape(host)} reaches beyond this machine"):
            Settings(grpc_host=host)
        Settings(grpc_host=host, insecure=True)
        Settings(grpc_host=host, tls_cert_file="cert.pem", tls_key_file="key.pem")
    for host in ("127.0.0.1", "::1", "localhost"):
        Settings(grpc_host=host)
