"""Every public SDK call and every `lepton` command is named in a test (tools/check_surface_coverage.py).

No platform needed: the check introspects the SDK and the command tree and reads the test files.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def check() -> Iterator[ModuleType]:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import check_surface_coverage

        yield check_surface_coverage
    finally:
        sys.path.remove(str(ROOT / "tools"))


def test_every_public_call_and_command_is_named_in_a_test(check: ModuleType) -> None:
    assert check.problems() == []


def test_the_surface_is_found_by_introspection(check: ModuleType) -> None:
    names = {item.name for item in check.sdk_surface() + check.cli_surface()}
    assert {
        "client.datasets.upload", "client.monitor.summary", "la.Dataset.update_schema", "la.models.Model.fit",
        "la.models.KMeans", "la.DataLoss", "lepton data versions", "lepton deployments create", "lepton up",
        "lepton --api-key",
    } <= names  # fmt: skip
    assert not {n for n in names if n.split(".")[-1].startswith("_")}


def test_the_check_fails_on_a_gap_and_on_a_stale_allowance(check: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = check.inventory()
    unnamed = check.Item("client.datasets.reticulate", "chain", ("datasets", "reticulate"))
    command = check.Item("lepton data reticulate", "command", ("data", "reticulate"))
    found = check.sources()
    assert check.naming(unnamed, found) == set() == check.naming(command, found)
    assert check.naming(check.Item("lepton data versions", "command", ("data", "versions")), found)
    monkeypatch.setitem(check.ALLOWED, "lepton data reticulate", "no longer a command")
    monkeypatch.setitem(check.ALLOWED, "client.datasets.upload", "named by many tests")
    assert check.problems([*rows, (unnamed, set(), None)]) == [
        "client.datasets.reticulate is named in no test: cover it against the platform, or add it to ALLOWED "
        "with a reason",
        "ALLOWED['lepton data reticulate'] matches nothing on the surface any more: remove it",
        "ALLOWED['client.datasets.upload'] is named by " + ", ".join(sorted(_files(rows, "client.datasets.upload")))
        + " now: remove it",
    ]  # fmt: skip


def _files(rows: list[tuple[object, set[str], object]], name: str) -> set[str]:
    return next(files for item, files, _ in rows if getattr(item, "name", "") == name)
