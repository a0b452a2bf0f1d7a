"""Fixtures of the SDK's unit tests: a fresh in-process fake platform per test (see fakes.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import lepton_ai as la

from .fakes import FakePlatform


@pytest.fixture(autouse=True)
def _no_platform_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's LEPTON_* variables must not leak into what the tests pass explicitly."""
    for name in ("LEPTON_URL", "LEPTON_API_KEY", "LEPTON_TLS_CA_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakePlatform]:
    """Six fake services on consecutive ports, fresh for each test."""
    platform = FakePlatform().start()
    try:
        yield platform
    finally:
        platform.stop()


@pytest.fixture
def client(fake: FakePlatform) -> Iterator[la.Client]:
    """An ``la.Client`` with the fake's API key, at the fake's url; closed after the test."""
    with fake.client() as c:
        yield c
