"""The platform's artifact signing key pair: made at the first start, reused after.

The private key (``artifact-signing.pem``, mode 0600) goes only to the service that makes
artifacts (the trainer); the public key (``artifact-signing.pub.pem``) to every service
that loads one, to the registry (which gives it to SDK clients) and to Triton's
environment, where the serving model reads it (lepton_ml.signing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lepton_ml.signing import Signer, TrustedKeys, load_public_keys, load_signer, write_key_pair

PRIVATE_KEY_NAME = "artifact-signing.pem"
PUBLIC_KEY_NAME = "artifact-signing.pub.pem"
#: The services that sign artifacts (they get the private key's path) ...
SIGNERS = frozenset({"trainer"})
#: ... and those that read them or hand the public key on (they get the public key's path).
VERIFIERS = frozenset({"evaluator", "registry", "deployer", "monitor"})


@dataclass(frozen=True)
class ArtifactKeys:
    """Where the key pair's two files are."""

    private_key_file: Path
    public_key_file: Path

    def settings(self, service: str) -> dict[str, str]:
        """The settings that give ``service`` what it needs of the pair (nothing for most)."""
        values: dict[str, str] = {}
        if service in SIGNERS:
            values["artifact_signing_key_file"] = str(self.private_key_file)
        if service in VERIFIERS:
            values["artifact_public_key_file"] = str(self.public_key_file)
        return values

    def signer(self) -> Signer:
        return load_signer(self.private_key_file)

    def trusted(self) -> TrustedKeys:
        return load_public_keys(self.public_key_file)


def ensure_artifact_keys(secrets_dir: Path) -> ArtifactKeys:
    """The key pair in ``secrets_dir``, made when it is not there (a restart reuses it)."""
    keys = ArtifactKeys(secrets_dir / PRIVATE_KEY_NAME, secrets_dir / PUBLIC_KEY_NAME)
    if not keys.private_key_file.exists():
        secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_key_pair(keys.private_key_file, keys.public_key_file)
    elif not keys.public_key_file.exists():
        # The public half is derived: write it again from the private key.
        keys.public_key_file.write_bytes(keys.signer().trusted().pem())
    return keys
