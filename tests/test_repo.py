"""Promises about the repository itself: docs match code, configs are valid, deps import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lepton_core import nats_identity
from lepton_platform.processes import STORE_KEY_ENV, nats_server_binary

ROOT = Path(__file__).resolve().parent.parent


def test_event_catalogue_doc_matches_the_code() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import check_events_doc
    finally:
        sys.path.pop(0)
    assert check_events_doc.problems((ROOT / "docs" / "events.md").read_text()) == []
    assert check_events_doc.problems("nothing here")  # the check can fail


def test_pinned_dependencies_import_together() -> None:
    """pip check passes on pyarrow>=22 with numpy 1.x, yet pyarrow then refuses to import."""
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "smoke_imports.py")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_requirement_is_pinned_exactly() -> None:
    for name in ("base.in", "lock.txt"):
        for line in (ROOT / "requirements" / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert "==" in line, f"{name}: {line} is not pinned"


@pytest.mark.parametrize("node", [1, 2, 3])
def test_cluster_configs_are_valid_nats_configs(node: int, tmp_path: Path) -> None:
    """deploy/nats as an operator sets it up: certificates from a test CA, users.conf from nats_users init."""
    from lepton_core.tls import write_self_signed
    from lepton_platform import nats_users

    tls = tmp_path / "tls"
    client, route = write_self_signed(tls / "client"), write_self_signed(tls / "route")
    for src, name in ((client.cert_file, "server.pem"), (client.key_file, "server.key"), (client.ca_file, "ca.pem")):
        (tls / name).write_bytes(src.read_bytes())
    for src, name in ((route.cert_file, "route.pem"), (route.key_file, "route.key"), (route.ca_file, "route-ca.pem")):
        (tls / name).write_bytes(src.read_bytes())
    assert nats_users.main(["init", "--dir", str(tmp_path / "secrets")]) == 0
    (tmp_path / "users.conf").write_bytes((tmp_path / "secrets" / "users.conf").read_bytes())
    text = (ROOT / "deploy" / "nats" / f"node-{node}.conf").read_text()
    # Secure by default, in the file as shipped: TLS on both ports, route certificates verified,
    # monitoring on localhost, every user an nkey with its permissions (no anonymous access).
    assert "http: 127.0.0.1:" in text and "verify: true" in text and text.count("tls {") == 2
    assert 'include "users.conf"' in text and "no_auth_user" not in text
    # The store encrypted at rest, with a key from the environment, never in the file.
    assert "cipher: chachapoly" in text and f"key: ${STORE_KEY_ENV}" in text
    conf = tmp_path / f"node-{node}.conf"
    conf.write_text(text.replace("/etc/nats/tls/", f"{tls}/").replace("/data/jetstream", str(tmp_path / "js")))
    env = {**os.environ, STORE_KEY_ENV: "k" * 43}
    out = subprocess.run([nats_server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    users = (tmp_path / "users.conf").read_text()
    assert users.count('"nkey"') == len(nats_identity.IDENTITIES) and "password" not in users
