"""Signed artifacts: an Ed25519 envelope around the bundle zip.

An artifact as stored, downloaded and shipped is one self-contained blob::

    MAGIC (8 bytes) | key id (8 bytes) | Ed25519 signature (64 bytes) | the zip

The signature covers ``MAGIC | key id | zip``, so every byte that is later unzipped or
deserialised is signed, and a signature cannot be moved under another key id or format.
The key id is the first 8 bytes of SHA-256 over the raw 32-byte public key; it only picks
which trusted key to check against (any key not trusted is refused). Every loader calls
:func:`verify` before reading a byte of the zip: there is no detached signature to forget.

Keys are PEM files: the private key (PKCS#8, mode 0600) only where artifacts are made
(the trainer), the public key (SubjectPublicKeyInfo) wherever they are loaded. A public
key file may hold several PEM blocks (an old and a new key while rotating).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lepton_core.errors import DataIntegrityError, FailedPrecondition

#: The environment variable naming the artifact public key file on a Triton server's process
#: (:class:`lepton_platform.processes.TritonServer` sets it): the serving model verifies with it.
PUBLIC_KEY_ENV = "LEPTON_ARTIFACT_PUBLIC_KEY_FILE"
#: "Lepton artifact, envelope format 1".
MAGIC = b"LPTNART1"
KEY_ID_BYTES = 8
SIGNATURE_BYTES = 64
HEADER_BYTES = len(MAGIC) + KEY_ID_BYTES + SIGNATURE_BYTES
_PEM_BEGIN = b"-----BEGIN PUBLIC KEY-----"


def key_id(public_key: Ed25519PublicKey) -> bytes:
    """The 8-byte id of ``public_key`` written into each envelope it signs."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:KEY_ID_BYTES]


@dataclass(frozen=True)
class Signer:
    """A private key that signs artifacts (only the service that makes them holds one)."""

    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def sign(self, payload: bytes) -> bytes:
        """The envelope of ``payload``: header, then the payload itself."""
        kid = key_id(self.public_key)
        signature = self.private_key.sign(MAGIC + kid + payload)
        return MAGIC + kid + signature + payload

    def trusted(self) -> TrustedKeys:
        """The public half as a one-key :class:`TrustedKeys` (tests, tools)."""
        return TrustedKeys.of([self.public_key])

    @staticmethod
    def generate() -> Signer:
        return Signer(Ed25519PrivateKey.generate())


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys whose artifacts a loader accepts, by key id."""

    keys: Mapping[bytes, Ed25519PublicKey]

    @staticmethod
    def of(public_keys: Iterable[Ed25519PublicKey]) -> TrustedKeys:
        return TrustedKeys({key_id(k): k for k in public_keys})

    def pem(self) -> bytes:
        """Every key as PEM blocks (what :func:`load_public_keys` reads)."""
        return b"".join(
            k.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            for k in self.keys.values()
        )


def verify(envelope: bytes, trusted: TrustedKeys) -> bytes:
    """The signed payload of ``envelope``, once its signature checks against a trusted key.

    Raises:
        DataIntegrityError: The blob is not an envelope (an unsigned artifact), names a
            key that is not trusted, or its signature does not match its bytes (tampered).
    """
    if not trusted.keys:
        raise FailedPrecondition("no artifact public key is configured, so no artifact can be loaded")
    if len(envelope) < HEADER_BYTES or not envelope.startswith(MAGIC):
        raise DataIntegrityError("artifact is not signed: it lacks the Lepton signature header, refused unread")
    kid = envelope[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES]
    signature = envelope[len(MAGIC) + KEY_ID_BYTES : HEADER_BYTES]
    payload = envelope[HEADER_BYTES:]
    public_key = trusted.keys.get(kid)
    if public_key is None:
        raise DataIntegrityError(
            f"artifact is signed by key {kid.hex()}, which is not a trusted artifact key; refused unread"
        )
    try:
        public_key.verify(signature, MAGIC + kid + payload)
    except InvalidSignature:
        raise DataIntegrityError(
            f"artifact signature does not match its contents (key {kid.hex()}): it was altered after signing; "
            "refused unread"
        ) from None
    return payload


def load_signer(path: str | os.PathLike[str]) -> Signer:
    """The Ed25519 private key in PEM file ``path``."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"artifact signing key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise FailedPrecondition(f"artifact signing key {path}: not an Ed25519 private key")
    return Signer(key)


def load_public_keys(path: str | os.PathLike[str]) -> TrustedKeys:
    """The Ed25519 public keys in PEM file ``path`` (one or more blocks)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FailedPrecondition(f"artifact public key {path}: {exc}") from exc
    return parse_public_keys(data, str(path))


def parse_public_keys(data: bytes, source: str = "artifact public key") -> TrustedKeys:
    """The Ed25519 public keys in PEM ``data`` (one or more blocks)."""
    keys: list[Ed25519PublicKey] = []
    for block in data.split(_PEM_BEGIN)[1:]:
        try:
            key = serialization.load_pem_public_key(_PEM_BEGIN + block)
        except ValueError as exc:
            raise FailedPrecondition(f"{source}: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise FailedPrecondition(f"{source}: not an Ed25519 public key")
        keys.append(key)
    if not keys:
        raise FailedPrecondition(f"{source}: no PEM public key in it")
    return TrustedKeys.of(keys)


def write_key_pair(private_path: Path, public_path: Path) -> None:
    """Creates a new key pair: the private key readable by its owner only (0600)."""
    signer = Signer.generate()
    pem = signer.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(signer.trusted().pem())


def signer_from_setting(path: str | None, setting: str) -> Signer:
    """The signing key a service's ``setting`` names; a clear refusal when it names none."""
    if not path:
        raise FailedPrecondition(
            f"{setting} is not set: artifacts are signed where they are made, so this service needs the "
            "platform's Ed25519 artifact signing key (lepton up creates one under <workdir>/secrets)"
        )
    return load_signer(path)


def trusted_from_setting(path: str | None, setting: str) -> TrustedKeys:
    """The public keys a service's ``setting`` names; a clear refusal when it names none."""
    if not path:
        raise FailedPrecondition(
            f"{setting} is not set: every artifact is verified before it is loaded, so this service needs the "
            "platform's Ed25519 artifact public key (lepton up creates one under <workdir>/secrets)"
        )
    return load_public_keys(path)
