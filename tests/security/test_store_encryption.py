"""The JetStream store on disk: what the platform writes there is encrypted, whatever it is.

Datasets, models, events and prediction logs all live in JetStream (streams, KV buckets,
object stores). A marker value is uploaded in a dataset and searched for in every file of
the store: it must be nowhere, while the dataset reads back intact. The same search finds a
marker in a store written without encryption, so it can fail.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from pathlib import Path

import polars as pl
import pytest

import lepton_ai as la
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.nats_users import main
from lepton_platform.processes import NatsServer, StoreDamaged
from lepton_platform.testing import admin_connect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _files_holding(store: Path, needle: bytes) -> list[Path]:
    return [p for p in store.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _stored_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file())


def _settled(store: Path, at_least: int, timeout: float = 30.0) -> None:
    """Waits until the store's files have grown by ``at_least`` bytes: the data reached the disk."""
    deadline = time.monotonic() + timeout
    while _stored_bytes(store) < at_least:
        assert time.monotonic() < deadline, f"the store did not grow to {at_least} bytes in {timeout:g} s"
        time.sleep(0.1)


def test_a_dataset_is_nowhere_in_plaintext_on_disk_and_reads_back_intact(
    platform: EmbeddedPlatform, tmp_path: Path
) -> None:
    assert platform.nats is not None
    store = platform.nats.store
    marker = f"plaintext-marker-{secrets.token_hex(8)}"
    # 16 random bytes a row that no compression removes: at least 32 kB must reach the disk.
    notes = [f"{marker}-{secrets.token_hex(16)}" for _ in range(2000)]
    frame = pl.DataFrame({"x": [float(i) for i in range(2000)], "note": notes})
    csv = tmp_path / "marked.csv"
    frame.write_csv(csv)
    before = _stored_bytes(store)
    with la.Client(platform.api_key, platform.url) as client:
        dataset = client.datasets.upload(csv, f"marked-{marker}", progress=False)
        back = client.datasets.get(dataset.version_id).to_polars()
    assert back["note"].to_list() == frame["note"].to_list()  # intact through the encrypted store
    _settled(store, before + 2000 * 16)
    assert _files_holding(store, marker.encode()) == []


def test_the_same_search_finds_a_marker_in_a_store_written_without_encryption(tmp_path: Path) -> None:
    nats = NatsServer(tmp_path / "plain", encrypt_store=False)
    marker = f"plaintext-marker-{secrets.token_hex(8)}".encode()

    async def publish() -> None:
        nc = await admin_connect(nats.url, "test-plain-store")
        try:
            await nc.jetstream().publish("lepton.evt.plain.dataset.version.created", marker * 64)
        finally:
            await nc.close()

    try:
        asyncio.run(publish())
        deadline = time.monotonic() + 30
        while not _files_holding(nats.store, marker):
            assert time.monotonic() < deadline, "the unencrypted store never held the marker"
            time.sleep(0.1)
    finally:
        nats.stop()


def test_the_store_key_is_made_once_private_and_kept_out_of_the_config(tmp_path: Path) -> None:
    nats = NatsServer(tmp_path / "enc")
    try:
        key_file = nats.secrets.store_key_file
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = key_file.read_text().strip()
        assert re.fullmatch("k[0-9a-f]{64}", key)  # 32 random bytes, read by nats-server as a string
        assert key not in (nats.workdir / "nats.conf").read_text()
        assert key.encode() not in Path(f"/proc/{nats.process.pid}/cmdline").read_bytes()
    finally:
        nats.stop()
    again = NatsServer(tmp_path / "enc")  # a restart: the same key, the same store, readable
    try:
        assert again.secrets.store_key_file.read_text().strip() == key
    finally:
        again.stop()


def test_a_rotated_store_key_re_encrypts_the_store_and_the_old_key_reads_nothing(tmp_path: Path) -> None:
    """``nats_users rotate-store-key``: the next start re-encrypts with the new key and drops the old one."""
    workdir = tmp_path / "rotate"
    subject = "lepton.evt.rot.dataset.version.created"
    marker = f"rotation-marker-{secrets.token_hex(8)}".encode()

    async def stored(url: str, publish: bool = False) -> bytes | None:
        nc = await admin_connect(url, "test-rotation")
        try:
            js = nc.jetstream()
            if publish:
                await js.publish(subject, marker)
            try:
                return (await js.get_last_msg("EVENTS", subject)).data
            except Exception:
                return None
        finally:
            await nc.close()

    first = NatsServer(workdir)
    try:
        asyncio.run(stored(first.url, publish=True))
    finally:
        first.stop()
    old_key = first.secrets.store_key_file.read_text().strip()
    assert main(["rotate-store-key", "--dir", str(first.secrets.directory)]) == 0
    assert main(["rotate-store-key", "--dir", str(first.secrets.directory)]) == 1  # one rotation at a time
    new_key = first.secrets.store_key_file.read_text().strip()
    assert new_key != old_key and first.secrets.store_key_file.stat().st_mode & 0o777 == 0o600

    for start in ("with both keys", "with the new key alone"):
        server = NatsServer(workdir)
        try:
            assert asyncio.run(stored(server.url)) == marker, start
            assert server.secrets.previous_store_key_file is None  # dropped once the store was re-encrypted
            assert old_key not in (server.workdir / "nats.conf").read_text()
        finally:
            server.stop()

    # The old key alone no longer opens the store: the platform does not start, saying why, rather than
    # declare the streams anew over what it cannot read.
    first.secrets.store_key_file.write_text(old_key + "\n")
    with pytest.raises(StoreDamaged, match=r"(?s)did not restore .*EVENTS.*unable to recover keys"):
        NatsServer(workdir)
    assert not Path(f"/proc/{(workdir / 'nats-server.pid').read_text().strip()}").exists()  # not left running
    assert "unable to recover keys" in (workdir / "nats-server.log").read_text()
