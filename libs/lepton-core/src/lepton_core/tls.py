"""TLS for the platform's gRPC: peer addresses, server credentials, a throwaway CA.

- :class:`Peer` is another service's address and how to reach it: TLS when the
  address is ``grpcs://host:port`` or a CA file is configured, verified against that
  CA (the system's roots when none is given).
- :func:`server_credentials` turns a PEM certificate and key into what
  :func:`lepton_core.rpc.create_server` serves with.
- :func:`write_self_signed` makes a CA and a server certificate for one machine
  (the embedded platform's ``tls=True`` and the tests).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc

#: URL schemes a peer address may carry; anything else is passed to gRPC as a target.
_PLAIN_SCHEMES = ("grpc", "http")
_TLS_SCHEMES = ("grpcs", "https")


def read_pem(path: str | os.PathLike[str], setting: str, kind: str = "CERTIFICATE") -> bytes:
    """The PEM bytes of ``path``; a missing or non-PEM file raises naming ``setting``.

    gRPC's own errors for a bad file are a crash deep in the TLS stack, so the file is
    checked here, where the setting that named it is known.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from exc
    if b"-----BEGIN" not in data or kind.encode() not in data:
        raise ValueError(f"{setting}: {path} holds no PEM {kind.lower()}")
    return data


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): traffic that never leaves the machine.

    Any other address, and any other host name (it may resolve anywhere), is not.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Peer:
    """Where another service listens and how to reach it.

    Attributes:
        address: ``host:port`` (or any gRPC target) without a scheme.
        tls: Whether calls use TLS.
        root_certificates: PEM CA certificates the peer's certificate must chain to;
            None trusts the system's roots.
    """

    address: str
    tls: bool = False
    root_certificates: bytes | None = field(default=None, repr=False)
    client_certificate: tuple[bytes, bytes] | None = field(default=None, repr=False)
    """(PEM certificate chain, PEM private key) presented to a peer that asks for one (mutual TLS)."""

    @classmethod
    def parse(
        cls,
        url: str,
        ca_file: str | os.PathLike[str] | None = None,
        client_certificate: tuple[bytes, bytes] | None = None,
    ) -> Peer:
        """A peer from ``host:port`` or ``grpcs://host:port``; a ``ca_file`` means TLS verified against it."""
        roots = read_pem(ca_file, "tls_ca_file") if ca_file else None
        scheme, sep, rest = url.partition("://")
        if sep and scheme.lower() in _PLAIN_SCHEMES + _TLS_SCHEMES:
            tls = scheme.lower() in _TLS_SCHEMES or roots is not None
            return cls(rest.rstrip("/"), tls=tls, root_certificates=roots, client_certificate=client_certificate)
        # A bare host:port, or a gRPC target of its own (dns:///..., unix:...): unchanged.
        return cls(url, tls=roots is not None, root_certificates=roots, client_certificate=client_certificate)

    def credentials(self) -> grpc.ChannelCredentials | None:
        """Channel credentials for TLS (with the client certificate, when there is one), or None for plaintext."""
        if not self.tls:
            return None
        chain, key = self.client_certificate or (None, None)
        return grpc.ssl_channel_credentials(self.root_certificates, private_key=key, certificate_chain=chain)

    def channel(self) -> grpc.Channel:
        """A blocking channel to the peer (probes and tools; services use ``rpc.client_channel``)."""
        credentials = self.credentials()
        if credentials is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, credentials)

    def __str__(self) -> str:
        return f"grpcs://{self.address}" if self.tls else self.address


def server_credentials(
    cert_file: str | os.PathLike[str],
    key_file: str | os.PathLike[str],
    client_ca_file: str | os.PathLike[str] | None = None,
) -> grpc.ServerCredentials:
    """Server credentials from a PEM certificate (chain) file and its PEM private key.

    With ``client_ca_file``, mutual TLS: a client must present a certificate that chains to it,
    or the handshake fails before any call.
    """
    pair = [(read_pem(key_file, "tls_key_file", "PRIVATE KEY"), read_pem(cert_file, "tls_cert_file"))]
    if client_ca_file is None:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(
        pair, root_certificates=read_pem(client_ca_file, "tls_ca_file"), require_client_auth=True
    )


def certificate_pair(cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(PEM certificate chain, PEM private key) to present as a client: :attr:`Peer.client_certificate`."""
    return read_pem(cert_file, "tls_cert_file"), read_pem(key_file, "tls_key_file", "PRIVATE KEY")


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a server certificate it signed, as PEM files."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def write_self_signed(
    directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 30, *, client_auth: bool = False
) -> TlsFiles:
    """Writes a fresh CA and a server certificate for ``hosts`` into ``directory``.

    ``client_auth`` makes the certificate good for the client side of mutual TLS as well
    (a NATS route certificate: each node dials the others with it).

    For one machine's platform and for tests: the CA's key is thrown away, so it can
    sign nothing else, and clients trust exactly this platform by trusting ``ca.pem``.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lepton local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, *([ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [])]
            ),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    # The key file is created private: never readable by others, not even briefly.
    fd = os.open(files.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return files
