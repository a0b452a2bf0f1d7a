"""A client never sends its API key in plaintext to another machine unless told it may."""

from __future__ import annotations

import asyncio

import pytest

import lepton_ai as la

REMOTE = ["10.0.0.5:50051", "lepton.example:50051", "grpc://192.168.1.2:50051"]


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEPTON_INSECURE", "LEPTON_TLS_CA_FILE", "LEPTON_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("url", REMOTE)
def test_plaintext_to_another_machine_is_refused_before_any_call(url: str) -> None:
    with pytest.raises(la.InvalidArgument, match="the API key would cross the network unencrypted") as refused:
        la.Client("k", url)
    assert "grpcs://" in refused.value.message and "insecure=True (LEPTON_INSECURE=1)" in refused.value.message
    with pytest.raises(la.InvalidArgument, match="unencrypted"):
        la.AsyncClient("k", url)


def test_one_remote_endpoint_among_local_ones_is_refused_too() -> None:
    with pytest.raises(la.InvalidArgument, match=r"10\.0\.0\.9 is another machine"):
        la.Client("k", "127.0.0.1:50051", endpoints={"trainer": "10.0.0.9:50052"})


def test_loopback_tls_and_an_explicit_insecure_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ("127.0.0.1:50051", "localhost:50051", "127.0.0.2:1", "grpcs://lepton.example:443"):
        la.Client("k", url).close()
    la.Client("k", "10.0.0.5:50051", insecure=True).close()

    async def open_and_close() -> None:
        client = la.AsyncClient("k", "10.0.0.5:50051", insecure=True)
        await client.close()

    asyncio.run(open_and_close())
    monkeypatch.setenv("LEPTON_INSECURE", "1")
    la.Client("k", "10.0.0.5:50051").close()
    with pytest.raises(la.InvalidArgument):
        la.Client("k", "10.0.0.5:50051", insecure=False)  # the argument wins over the environment
