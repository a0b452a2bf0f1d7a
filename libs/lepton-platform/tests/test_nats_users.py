"""The identities on disk and the users file nats-server reads (files only; tests/security has the server)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from lepton_core.errors import InvalidArgument
from lepton_core.nats_identity import IDENTITIES, integrator_permissions, permissions
from lepton_platform import nats_users
from lepton_platform.nats_users import NatsSecrets


def _users(secrets: NatsSecrets) -> list[dict[str, object]]:
    text = secrets.users_conf()
    return list(json.loads(text[text.index("users = ") + len("users = ") : text.rindex("}")]))


def test_seeds_are_made_once_private_and_reused(tmp_path: Path) -> None:
    first = NatsSecrets(tmp_path / "secrets")
    keys = {identity: first.public_key(identity) for identity in IDENTITIES}
    assert stat.S_IMODE(first.directory.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(first.seed_file(i).stat().st_mode) == 0o600 for i in IDENTITIES)
    again = NatsSecrets(tmp_path / "secrets")  # a restart of the same workdir
    assert {identity: again.public_key(identity) for identity in IDENTITIES} == keys
    assert len(set(keys.values())) == len(IDENTITIES)
    with pytest.raises(KeyError, match="not a NATS identity"):
        first.seed_file("intruder")


def test_the_users_file_names_every_identity_with_its_permissions_and_no_secret(tmp_path: Path) -> None:
    secrets = NatsSecrets(tmp_path)
    users = _users(secrets)
    assert [u["nkey"] for u in users] == [secrets.public_key(i) for i in IDENTITIES]
    assert [u["permissions"] for u in users] == [permissions(i).to_config() for i in IDENTITIES]
    text = secrets.users_conf()
    assert all(secrets.seed_file(i).read_text().strip() not in text for i in IDENTITIES)
    assert "password" not in text and "no_auth_user" not in text


def test_integrators_are_issued_recorded_by_public_key_and_revoked(tmp_path: Path) -> None:
    secrets = NatsSecrets(tmp_path / "s")
    issued = secrets.issue("acme", tmp_path / "acme.nk")
    assert stat.S_IMODE((tmp_path / "acme.nk").stat().st_mode) == 0o600
    assert (tmp_path / "acme.nk").read_text().strip() not in (tmp_path / "s" / "integrators.json").read_text()
    entry = _users(secrets)[-1]
    assert entry == {"nkey": issued.public_key, "permissions": integrator_permissions("acme").to_config()}
    with pytest.raises(InvalidArgument, match="tenant"):
        secrets.issue("acme.>", tmp_path / "bad.nk")
    assert not (tmp_path / "bad.nk").exists()
    assert secrets.revoke(issued.public_key) and not secrets.revoke(issued.public_key)
    assert issued.public_key not in secrets.users_conf()


def test_the_operator_command_writes_the_users_file_and_issues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert nats_users.main(["init", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "users.conf").read_text() == NatsSecrets(tmp_path).users_conf()
    assert nats_users.main(["issue", "--dir", str(tmp_path), "--tenant", "acme", "--out", str(tmp_path / "a.nk")]) == 0
    (issued,) = NatsSecrets(tmp_path).integrators()
    assert issued.public_key in (tmp_path / "users.conf").read_text()
    assert nats_users.main(["revoke", "--dir", str(tmp_path), "--public-key", "UNKNOWN"]) == 1
    out = capsys.readouterr()
    assert (tmp_path / "a.nk").read_text().strip() not in out.out + out.err  # the seed is never printed


def test_only_empty_blocks_without_their_key_are_set_aside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What a full disk leaves (an empty block whose key was never written) goes; every other block stays."""
    msgs = tmp_path / "store" / "jetstream" / "$G" / "streams" / "EVENTS" / "msgs"
    msgs.mkdir(parents=True)
    (msgs / "1.blk").write_bytes(b"data")
    (msgs / "1.key").write_bytes(b"key")
    (msgs / "2.blk").write_bytes(b"")  # a full disk's leftover
    (msgs / "3.blk").write_bytes(b"")
    (msgs / "3.key").write_bytes(b"key")  # empty, but with its key: nats-server reads it
    (msgs / "4.blk").write_bytes(b"data without a key")  # not empty: never touched here
    aside = tmp_path / "aside"
    assert nats_users.main(["set-aside-empty-blocks", "--store-dir", str(tmp_path / "store"), "--to", str(aside)]) == 0
    assert sorted(p.name for p in msgs.iterdir()) == ["1.blk", "1.key", "3.blk", "3.key", "4.blk"]
    (moved,) = aside.iterdir()
    assert moved.name.endswith("-EVENTS-2.blk")
    assert "1 empty block(s)" in capsys.readouterr().out
