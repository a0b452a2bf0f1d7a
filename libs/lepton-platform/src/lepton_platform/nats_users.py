"""NATS identities on disk, the server's users file, integrator credentials, and the operator command.

One private directory (0700) holds an nkey seed per identity of
:data:`lepton_core.nats_identity.IDENTITIES` (``<identity>.nk``, 0600) and the public keys
of the integrators issued (``integrators.json``: the platform keeps no integrator's seed).
From it, :meth:`NatsSecrets.users_conf` renders nats-server's ``authorization`` block.

``python -m lepton_platform.nats_users``::

    init    --dir DIR                       seeds for every identity (kept if present), DIR/users.conf
    issue   --dir DIR --tenant T --out FILE subscribe-only credentials for tenant T's events;
            [--pid-file F]                  rewrites DIR/users.conf and reloads the server (SIGHUP)
    revoke  --dir DIR --public-key U...     removes an integrator; rewrites users.conf, reloads likewise
    declare --url URL --seed-file FILE      declares streams, KV buckets and object stores (the admin's
            [--replicas 3] [--tls-ca-file]  seed); services only check that they exist. --migrate-buckets
            [--migrate-buckets]             (services stopped) moves buckets made before they were erasable
    service-keys --dir DIR                  every service's public nkey as JSON: their SERVICE_KEYS setting
    rotate-store-key --dir DIR              a new JetStream store key; the next start re-encrypts with it
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from nats.js import JetStreamContext

from lepton_core import nats_identity
from lepton_core.access import KEYS_BUCKET, KeyRecord, ensure_key
from lepton_core.bus import connect, declare_topology
from lepton_core.nats_identity import ADMIN, IDENTITIES, Permissions

T = TypeVar("T")


@dataclass(frozen=True)
class Integrator:
    """An integrator's credentials as the platform records them: the tenant and the public key."""

    tenant: str
    public_key: str


def new_store_key() -> str:
    """A JetStream store key: 32 random bytes as hex, after a letter.

    nats-server reads an environment variable a config names as a config value: one that begins
    with a digit is taken for a number (and refused when it is not one), so the key begins with
    ``k``; hex keeps it one token.
    """
    return "k" + secrets.token_hex(32)


class NatsSecrets:
    """The identities' seeds in one private directory; made at first use, reused afterwards."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        for identity in IDENTITIES:
            path = self.seed_file(identity)
            if not path.exists():
                nats_identity.write_private(path, nats_identity.new_seed() + b"\n")

    def seed_file(self, identity: str) -> Path:
        """The seed file of one of :data:`~lepton_core.nats_identity.IDENTITIES`."""
        if identity not in IDENTITIES:
            raise KeyError(f"{identity!r} is not a NATS identity; expected one of {', '.join(IDENTITIES)}")
        return self.directory / f"{identity}.nk"

    @property
    def store_key_file(self) -> Path:
        """The key JetStream encrypts its store with (nats-server's ``jetstream.key``): made once, 0600.

        :func:`new_store_key`. Lose it and the store cannot be read; it never goes in a config file
        or on a command line (:class:`~lepton_platform.processes.NatsServer` hands it to
        nats-server in its environment).
        """
        path = self.directory / "store.key"
        if not path.exists():
            nats_identity.write_private(path, new_store_key().encode() + b"\n")
        return path

    @property
    def previous_store_key_file(self) -> Path | None:
        """The key the store was encrypted with before :meth:`rotate_store_key`, until a start finishes it."""
        path = self.directory / "store.prev.key"
        return path if path.exists() else None

    def rotate_store_key(self) -> Path:
        """Makes a new store key, keeping the current one as the previous key; returns the new key's file.

        The next start of the server hands it both (``prev_key``), re-encrypting the store's keys
        under the new one, and then deletes the previous key (:meth:`finish_store_key_rotation`).

        Raises:
            FileExistsError: a rotation is pending: start the server once before rotating again.
        """
        previous = self.directory / "store.prev.key"
        if previous.exists():
            raise FileExistsError(
                f"{previous} exists: a rotation is pending; start the platform once to finish it, then rotate again"
            )
        os.link(self.store_key_file, previous)
        nats_identity.write_private(self.directory / "store.key.new", new_store_key().encode() + b"\n")
        os.replace(self.directory / "store.key.new", self.store_key_file)
        return self.store_key_file

    def finish_store_key_rotation(self) -> None:
        """Deletes the previous store key, once a server started with both has re-encrypted the store."""
        previous = self.previous_store_key_file
        if previous is not None:
            previous.unlink()

    def public_key(self, identity: str) -> str:
        return nats_identity.public_key(self.seed_file(identity).read_bytes())

    def service_keys(self) -> str:
        """The ``service_keys`` setting of every process: each service's public nkey, as JSON.

        What a service checks the tokens of the others against (:class:`lepton_core.access.ServiceVerifier`).
        """
        return json.dumps(
            {name: self.public_key(name) for name in nats_identity.IDENTITIES if nats_identity.GRANTS[name].service}
        )

    @property
    def _integrators_file(self) -> Path:
        return self.directory / "integrators.json"

    def integrators(self) -> list[Integrator]:
        """The integrator credentials issued and not revoked."""
        if not self._integrators_file.exists():
            return []
        return [Integrator(**entry) for entry in json.loads(self._integrators_file.read_text())]

    def _save_integrators(self, integrators: list[Integrator]) -> None:
        data = json.dumps([i.__dict__ for i in integrators], indent=1).encode()
        nats_identity.write_private(self._integrators_file, data)

    def issue(self, tenant: str, out: Path) -> Integrator:
        """Writes new subscribe-only credentials for ``tenant``'s events to ``out`` (0600) and records them.

        The server accepts them once its users file is rewritten and reloaded
        (:meth:`NatsServer.reload <lepton_platform.processes.NatsServer.reload>`).
        """
        nats_identity.check_tenant(tenant)
        seed = nats_identity.new_seed()
        nats_identity.write_private(out, seed + b"\n")
        integrator = Integrator(tenant, nats_identity.public_key(seed))
        self._save_integrators([*self.integrators(), integrator])
        return integrator

    def revoke(self, public_key: str) -> bool:
        """Forgets an integrator; False when no such key was issued."""
        before = self.integrators()
        after = [i for i in before if i.public_key != public_key]
        self._save_integrators(after)
        return len(after) != len(before)

    def users_conf(self) -> str:
        """nats-server's ``authorization`` block: every identity and integrator with its permissions.

        No user without an nkey, no ``no_auth_user``: a connection without credentials is refused.
        """
        entries: list[tuple[str, Permissions]] = [
            (self.public_key(identity), nats_identity.permissions(identity)) for identity in IDENTITIES
        ]
        entries += [(i.public_key, nats_identity.integrator_permissions(i.tenant)) for i in self.integrators()]
        users = json.dumps(nats_identity.users(entries), indent=1)
        header = "# Generated by lepton_platform.nats_users from lepton_core.nats_identity."
        return f"{header}\nauthorization {{\n users = {users}\n}}\n"

    def write_users_conf(self, path: Path) -> Path:
        nats_identity.write_private(path, self.users_conf().encode())
        return path


def as_admin(
    url: str, seed_file: Path, job: Callable[[JetStreamContext], Awaitable[T]], tls_ca_file: Path | None = None
) -> T:
    """Runs ``job`` with a JetStream context of the admin identity, in a thread and event loop of its own
    (callers may already run an event loop: async fixtures, benches)."""

    async def run() -> T:
        nc = await connect(
            url,
            "lepton-admin",
            seed_file=str(seed_file),
            inbox=nats_identity.inbox_prefix(ADMIN),
            tls_ca_file=str(tls_ca_file) if tls_ca_file else None,
        )
        try:
            return await job(nc.jetstream())
        finally:
            await nc.close()

    results: list[T] = []
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            results.append(asyncio.run(run()))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=in_thread, name="lepton-admin")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def declare(
    url: str,
    seed_file: Path,
    replicas: int = 1,
    tls_ca_file: Path | None = None,
    migrate: bool = False,
    stored: Collection[str] = (),
) -> None:
    """Declares the platform's topology with the admin identity (idempotent).

    ``migrate``: no service is running, so buckets made before they were erasable are moved
    onto erasable streams (:func:`lepton_core.bus.migrate_bucket`). ``stored``: the streams the
    server's store holds files of; one it did not load is not declared anew
    (:class:`lepton_core.bus.StreamNotLoaded`).
    """
    as_admin(url, seed_file, lambda js: declare_topology(js, replicas, migrate, stored), tls_ca_file)


@dataclass(frozen=True)
class BootstrapKey:
    """A key the launcher makes before the services start (``lepton up``'s, a test's)."""

    secret: str
    tenant: str
    role: str = "admin"
    name: str = "bootstrap"


def write_keys(url: str, seed_file: Path, keys: Iterable[BootstrapKey]) -> list[KeyRecord]:
    """Makes each key's record unless one of its secret exists (:func:`lepton_core.access.ensure_key`)."""
    wanted = list(keys)

    async def job(js: JetStreamContext) -> list[KeyRecord]:
        kv = await js.key_value(KEYS_BUCKET)
        return [await ensure_key(kv, k.secret, tenant=k.tenant, role=k.role, name=k.name) for k in wanted]

    return as_admin(url, seed_file, job)


def message_blocks(store: Path) -> list[Path]:
    """Every stream's message blocks in a nats-server store: ``<store_dir>/jetstream/<account>/streams/
    <stream>/msgs/<n>.blk`` (the block's stream is ``block.parents[1].name``)."""
    return sorted(store.glob("jetstream/*/streams/*/msgs/*.blk"))


def holding_streams(store: Path) -> set[str]:
    """The streams with a message block holding bytes in a nats-server store.

    Only they can lose anything: nats-server 2.15 fails to restore some empty streams too (after a
    store key rotation, every stream without a message), and those are declared anew as they were.
    """
    return {block.parents[1].name for block in message_blocks(store) if block.stat().st_size}


def set_aside_empty_blocks(store: Path, aside: Path) -> list[Path]:
    """Moves each empty message block without its key out of an encrypted store, into ``aside``.

    A disk that fills up leaves one behind: nats-server made ``<n>.blk`` and could not write
    ``<n>.key``. nats-server 2.15 then fails to restore the stream ("corrupt state file") and
    deletes the stream's whole directory, every message it held with it (docs/operations.md, "A
    disk that filled up"). An empty block holds no message, so moving it loses nothing; it is
    kept in ``aside`` all the same, and each one is said on standard error.

    Returns:
        Where each block went.
    """
    moved: list[Path] = []
    for block in message_blocks(store):
        if block.stat().st_size or block.with_suffix(".key").exists():
            continue
        stream = block.parents[1].name
        target = aside / f"{time.strftime('%Y%m%dT%H%M%S')}-{stream}-{block.name}"
        aside.mkdir(parents=True, exist_ok=True)
        shutil.move(block, target)  # the store may be a disk of its own
        print(f"lepton: moved {block} (empty, without its key: a full disk's leftover) to {target}", file=sys.stderr)
        moved.append(target)
    return moved


def _reload(pid_file: Path | None) -> None:
    if pid_file is not None:
        os.kill(int(pid_file.read_text().strip()), signal.SIGHUP)
        print(f"reloaded nats-server (pid file {pid_file})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lepton_platform.nats_users", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="seeds for every identity and users.conf")
    init.add_argument("--dir", type=Path, required=True)
    issue = commands.add_parser("issue", help="subscribe-only credentials for one tenant's events")
    issue.add_argument("--dir", type=Path, required=True)
    issue.add_argument("--tenant", required=True)
    issue.add_argument("--out", type=Path, required=True)
    issue.add_argument("--pid-file", type=Path, help="nats-server's pid file: reload it")
    revoke = commands.add_parser("revoke", help="remove an integrator's credentials")
    revoke.add_argument("--dir", type=Path, required=True)
    revoke.add_argument("--public-key", required=True)
    revoke.add_argument("--pid-file", type=Path, help="nats-server's pid file: reload it")
    decl = commands.add_parser("declare", help="declare streams, KV buckets and object stores")
    decl.add_argument("--url", required=True)
    decl.add_argument("--seed-file", type=Path, required=True, help="the admin identity's seed")
    decl.add_argument("--replicas", type=int, default=1)
    decl.add_argument("--tls-ca-file", type=Path, help="the CA a tls:// server's certificate chains to")
    decl.add_argument(
        "--migrate-buckets",
        action="store_true",
        help="move KV buckets made before they were erasable onto erasable streams (stop the services first)",
    )
    rotate = commands.add_parser("rotate-store-key", help="a new JetStream store key; the next start re-encrypts")
    rotate.add_argument("--dir", type=Path, required=True)
    aside = commands.add_parser(
        "set-aside-empty-blocks",
        help="with nats-server stopped, after its disk filled up: move empty blocks without their key out of "
        "an encrypted store (nats-server would delete their streams at start)",
    )
    aside.add_argument("--store-dir", type=Path, required=True, help="nats-server's store_dir")
    aside.add_argument("--to", type=Path, required=True, help="where they go (outside the store)")
    keys = commands.add_parser("service-keys", help="print every service's public nkey as JSON (SERVICE_KEYS)")
    keys.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "rotate-store-key":
        try:
            path = NatsSecrets(args.dir).rotate_store_key()
        except FileExistsError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"new store key in {path}; the next start of nats-server re-encrypts the store and drops the old key")
        return 0
    if args.command == "set-aside-empty-blocks":
        moved = set_aside_empty_blocks(args.store_dir, args.to)
        print(f"{len(moved)} empty block(s) without their key set aside")
        return 0
    if args.command == "service-keys":
        print(NatsSecrets(args.dir).service_keys())
        return 0
    if args.command == "declare":
        declare(args.url, args.seed_file, args.replicas, args.tls_ca_file, args.migrate_buckets)
        print("topology declared")
        return 0
    secrets = NatsSecrets(args.dir)
    if args.command == "issue":
        integrator = secrets.issue(args.tenant, args.out)
        print(f"issued {integrator.public_key} for tenant {integrator.tenant}; seed in {args.out}")
    elif args.command == "revoke" and not secrets.revoke(args.public_key):
        print(f"no integrator has the key {args.public_key}", file=sys.stderr)
        return 1
    users = secrets.write_users_conf(args.dir / "users.conf")
    print(f"wrote {users}")
    if args.command != "init":
        _reload(args.pid_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
