"""The SDK's datasets API and the `lepton data` commands against the running platform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from sklearn.datasets import load_wine

import lepton_ai as la
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(platform: EmbeddedPlatform) -> la.Client:
    return la.Client(platform.api_key, platform.url)


def test_dataframes_and_files_round_trip(client: la.Client, tmp_path: Path) -> None:
    wine = load_wine(as_frame=True).frame
    from_pandas = client.datasets.upload(wine, name=unique("wine"))
    assert from_pandas.row_count == 178 and from_pandas.columns["alcohol"] == "Float64"
    pd.testing.assert_frame_equal(from_pandas.to_pandas(), wine, check_dtype=False)
    polars_df = pl.from_pandas(wine)
    from_polars = client.datasets.upload(polars_df, name=unique("wine"))
    assert from_polars.to_polars().equals(polars_df)
    path = tmp_path / "wine data.csv"
    wine.to_csv(path, index=False)
    from_file = client.datasets.upload(path, progress=False)
    assert from_file.name == "wine-data" and from_file.row_count == 178
    again = client.datasets.upload(path, progress=False)
    assert again.version_id == from_file.version_id and again.deduplicated
    assert client.datasets.get("wine-data").version_id == from_file.version_id
    assert client.datasets.get(from_file.id).version_id == from_file.version_id
    assert [d.version_id for d in client.datasets.versions("wine-data")] == [from_file.version_id]
    assert "wine-data" in [d.name for d in client.datasets.list(search="wine-d")]


def test_validate_apply_profile_split_delete(client: la.Client) -> None:
    name = unique("wine")
    v1 = client.datasets.upload(load_wine(as_frame=True).frame, name=name)
    summary = v1.set_rules([{"kind": "range", "column": "alcohol", "min": 12, "max": 15}])
    (rule,) = summary.rules
    assert (rule["kind"], rule["column"], rule["min"], rule["max"]) == ("range", "alcohol", 12.0, 15.0)
    report = v1.validate()
    assert not report.valid and report.violations[0].count > 0 and report.violations[0].examples
    assert v1.validate([{"kind": "row_count", "min": 1}]).valid
    profile = v1.profile()
    assert profile["alcohol"]["count"] == 178 and 12 < profile["alcohol"]["mean"] < 14
    v2 = v1.apply([{"op": "standardize", "columns": ["alcohol"]}, {"op": "cast", "column": "target", "dtype": "str"}])
    assert v2.parent_version_id == v1.version_id and v2.fitted and "alcohol" in v2.fitted[0]
    assert v2.columns["target"] == "String"
    counts = v2.split(la.SplitSpec(train=0.7, validation=0.1, test=0.2, seed=1, stratify="target"))
    assert counts.train + counts.validation + counts.test == 178
    test_rows = v2.to_polars(
        split="test", spec=la.SplitSpec(train=0.7, validation=0.1, test=0.2, seed=1, stratify="target")
    )
    assert test_rows.height == counts.test
    assert client.datasets.delete(name) == 2
    with pytest.raises(la.NotFound):
        client.datasets.get(name)


def test_errors_name_what_to_do(platform: EmbeddedPlatform, client: la.Client) -> None:
    with pytest.raises(la.InvalidArgument) as bad:
        client.datasets.upload(pl.DataFrame({"a": [1.0, float("nan")]}), name="nan-data")
    assert bad.value.field == "chunk" and "NaN" in bad.value.message
    with pytest.raises(la.InvalidArgument, match="name: a DataFrame upload needs a dataset name"):
        client.datasets.upload(pl.DataFrame({"a": [1]}))
    with pytest.raises(la.Unauthenticated, match="LEPTON_API_KEY"):
        la.Client("wrong-key", platform.url).datasets.list()
    port = free_port()
    with pytest.raises(la.Unavailable, match=f"127.0.0.1:{port}"):
        la.Client("k", f"127.0.0.1:{port}").datasets.list()
    with pytest.raises(la.NotFound):
        client.datasets.get("dv_doesnotexist")


def lepton(platform: EmbeddedPlatform, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LEPTON_URL": platform.url, "LEPTON_API_KEY": key or platform.api_key}
    cli = Path(sys.executable).parent / "lepton"
    return subprocess.run([str(cli), *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_data_commands_and_exit_codes(platform: EmbeddedPlatform, tmp_path: Path) -> None:
    path = tmp_path / "cli-wine.csv"
    load_wine(as_frame=True).frame.to_csv(path, index=False)
    up = lepton(platform, "--output", "json", "data", "upload", str(path), "--name", unique("cli"))
    assert up.returncode == 0, up.stderr
    version = json.loads(up.stdout)
    assert version["row_count"] == 178
    shown = lepton(platform, "data", "show", version["version_id"])
    assert shown.returncode == 0 and "alcohol" in shown.stdout
    prof = lepton(platform, "-o", "json", "data", "profile", version["version_id"])
    assert json.loads(prof.stdout)["alcohol"]["count"] == 178
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"kind": "range", "column": "alcohol", "max": 12}]))
    broken = lepton(platform, "data", "validate", version["version_id"], "--rules", str(rules))
    assert broken.returncode == 3 and "alcohol" in broken.stdout
    assert lepton(platform, "data", "show", "dv_missing").returncode == 4
    assert lepton(platform, "data", "list", key="bad-key").returncode == 5
    unreachable = subprocess.run(
        [str(Path(sys.executable).parent / "lepton"), "--url", f"127.0.0.1:{free_port()}", "data", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "LEPTON_API_KEY": "k"},
        timeout=60,
    )
    assert unreachable.returncode == 6 and "cannot reach" in unreachable.stderr
    usage = lepton(platform, "data", "upload")
    assert usage.returncode == 2
