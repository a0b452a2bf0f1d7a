"""`lepton up` keeps its state in a home directory: a restart finds the datasets, models and key there."""

from __future__ import annotations

from pathlib import Path

import pytest

import lepton_ai as la
from lepton_platform import embedded
from lepton_platform.demo import write_diabetes_csv
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _platform(home: Path, key: str) -> EmbeddedPlatform:
    return EmbeddedPlatform(
        home,
        api_key=key,
        services=("data", "trainer", "evaluator", "registry"),
        triton=False,
        # No deployer here: its lineage part is a warning, on an address where nothing listens.
        settings={"registry": {"deployer_url": f"127.0.0.1:{free_port()}"}},
    )


def test_the_home_directory_defaults_to_dot_lepton_and_keeps_one_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEPTON_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert embedded.home_dir() == tmp_path / ".lepton"
    monkeypatch.setenv("LEPTON_HOME", str(tmp_path / "elsewhere"))
    assert embedded.home_dir() == tmp_path / "elsewhere"
    key = embedded.stored_api_key(tmp_path / "elsewhere")
    assert embedded.stored_api_key(tmp_path / "elsewhere") == key  # made once, then read
    key_file = tmp_path / "elsewhere" / "secrets" / "api-key"
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key) >= 32


def test_a_restart_from_the_home_directory_finds_datasets_and_models(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key = embedded.stored_api_key(home)
    csv = write_diabetes_csv(tmp_path / "diabetes.csv")
    with _platform(home, key) as first, la.Client(key, first.url) as client:
        dataset = client.datasets.upload(csv, "kept-diabetes", progress=False)
        rows = client.datasets.get(dataset.version_id).to_polars()
        model = la.models.LinearRegression()
        model.fit(client.datasets.get("kept-diabetes"), progress=False)
        name, version = model.model_name, model.version
        # Keys are records in the store too: one made, one revoked.
        kept = client.keys.create("viewer", name="kept-viewer")
        gone = client.keys.create("viewer", name="revoked-viewer")
        client.keys.revoke(gone.key.id)
    assert embedded.stored_api_key(home) == key
    with _platform(home, key) as again, la.Client(key, again.url) as client:
        with la.Client(kept.secret, again.url) as viewer:
            assert viewer.whoami().key_id == kept.key.id
        with pytest.raises(la.Unauthenticated), la.Client(gone.secret, again.url) as revoked:
            revoked.datasets.list()
        assert {k.name for k in client.keys.list()} >= {"kept-viewer", "bootstrap"}
        assert client.datasets.get("kept-diabetes").version_id == dataset.version_id
        assert client.datasets.get(dataset.version_id).to_polars().equals(rows)
        assert [v.version for v in client.models.versions(name)] == [version]
        assert len(client.models.download(name, version)) > 0  # the artifact itself, from the store
