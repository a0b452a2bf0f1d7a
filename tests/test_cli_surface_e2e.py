"""Every `lepton` command against the running platform: the ones no other test runs, `--output json`
where a command offers it, and a wrong argument to each command (exit code and message).

The happy paths run the installed `lepton` executable; the wrong arguments run its entry
point, ``lepton_ai.cli:main``, in this process (the same code, without a Python start per
case). tools/check_surface_coverage.py (run by tests/test_surface_coverage.py) fails when a
command is named in no test; the table below must name every command of the tree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import typer

from lepton_ai import cli
from lepton_platform.demo import PipelineResult
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.testing import lepton_cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
LEPTON = Path(sys.executable).parent / "lepton"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def flat(text: str) -> str:
    """Rich wraps messages at the terminal's width; compare them on one line."""
    return " ".join(text.split())


def json_of(done: subprocess.CompletedProcess[str]) -> object:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


def lepton_inprocess(capsys: pytest.CaptureFixture[str], *args: str) -> Ran:
    """``lepton ARGS`` through the console script's entry point, in this process."""
    capsys.readouterr()
    argv, sys.argv = sys.argv, ["lepton", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return Ran(code, out, flat(err))


def command_paths() -> set[tuple[str, ...]]:
    """Every command of the `lepton` tree, as its words."""
    found: set[tuple[str, ...]] = set()

    def walk(command: object, words: tuple[str, ...]) -> None:
        children = getattr(command, "commands", None)
        if children is None:
            found.add(words)
        else:
            for name, child in children.items():
                walk(child, (*words, name))

    walk(typer.main.get_command(cli.app), ())
    return found


def test_data_commands_from_upload_to_delete(platform: EmbeddedPlatform, tmp_path: Path) -> None:
    name = unique("cli-surface")
    path = tmp_path / "points.csv"
    pl.DataFrame({"x": [float(i) for i in range(20)], "label": ["a", "b"] * 10}).write_csv(path)
    v1 = json_of(lepton_cli(platform, "-o", "json", "data", "upload", str(path), "--name", name))
    assert isinstance(v1, dict) and v1["row_count"] == 20
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"steps": [{"op": "standardize", "columns": ["x"]}]}))
    v2 = json_of(lepton_cli(platform, "-o", "json", "data", "apply", name, str(recipe)))
    assert isinstance(v2, dict) and (v2["parent_version_id"], v2["origin"]) == (v1["version_id"], "recipe")
    assert v2["fitted"][0]["x"]["mean"] == pytest.approx(9.5)
    shown = json_of(lepton_cli(platform, "-o", "json", "data", "show", v2["version_id"]))
    assert isinstance(shown, dict) and (shown["columns"], shown["row_count"]) == (
        {"x": "Float64", "label": "String"},
        20,
    )
    versions = json_of(lepton_cli(platform, "-o", "json", "data", "versions", name))
    assert [v["version_id"] for v in versions] == [v1["version_id"], v2["version_id"]]  # type: ignore[index]
    table = lepton_cli(platform, "data", "versions", name)
    # Piped (no terminal), a table is as wide as its content: ids are whole, for grep and awk.
    assert table.returncode == 0 and all(word in table.stdout for word in ("upload", "recipe", v2["version_id"]))
    args = ("data", "split", v2["version_id"], "--train", "0.5", "--validation", "0.25", "--seed", "3")
    counts = json_of(lepton_cli(platform, "-o", "json", *args, "--test", "0.25", "--stratify", "label"))
    assert isinstance(counts, dict) and sum(counts.values()) == 20
    assert all(n % 2 == 0 for n in counts.values()), counts  # stratified: as many a as b rows in each part
    shown = flat(lepton_cli(platform, *args, "--test", "0.25", "--stratify", "label").stdout)
    assert shown == f"train {counts['train']} · validation {counts['validation']} · test {counts['test']}"
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"kind": "not_null", "column": "x"}, {"kind": "row_count", "min": 20}]))
    report = json_of(lepton_cli(platform, "-o", "json", "data", "validate", name, "--rules", str(rules)))
    assert isinstance(report, dict) and (report["valid"], report["rules_checked"], report["violations"]) == (
        True, 2, [],
    )  # fmt: skip
    (listed,) = json_of(lepton_cli(platform, "-o", "json", "data", "list", "--search", name))  # type: ignore[misc]
    assert (listed["name"], listed["version_count"], listed["latest_version_id"]) == (name, 2, v2["version_id"])
    assert json_of(lepton_cli(platform, "-o", "json", "data", "delete", name)) == {"versions_deleted": 2}
    gone = lepton_cli(platform, "data", "show", name)
    assert gone.returncode == 4 and name in gone.stderr


def test_deployments_create_serve_monitor_and_delete(
    pipeline: PipelineResult, platform: EmbeddedPlatform, tmp_path: Path
) -> None:
    model, version = pipeline.model_version.model_name, pipeline.model_version.version
    name = unique("cli-surface")
    made = json_of(
        lepton_cli(
            platform, "-o", "json", "deployments", "create", name, "-m", model, "--version", str(version),
            "--batch", "4", "--instances", "1",
        )
    )  # fmt: skip
    assert isinstance(made, dict) and (made["state"], made["model_name"], made["version"]) == ("ready", model, version)
    assert made["last_rollout"]["outcome"] == "completed" and made["routes"][0]["weight"] == 1.0
    rows = tmp_path / "rows.jsonl"
    features = list(pipeline.deployment.feature_columns)
    pl.DataFrame(pipeline.rows, schema=features, orient="row").write_ndjson(rows)
    predicted = json_of(lepton_cli(platform, "-o", "json", "predict", name, str(rows), "--limit", "3"))
    np.testing.assert_allclose(predicted, pipeline.predictions[:3], atol=1e-6)  # type: ignore[arg-type]
    metrics = json_of(lepton_cli(platform, "-o", "json", "monitor", "metrics", name, "--last", "600"))
    assert isinstance(metrics, dict) and metrics["deployment"] == name and metrics["triton"]["reachable"] is True
    assert json_of(lepton_cli(platform, "-o", "json", "monitor", "alerts", name)) == []
    # The three predictions above reach the monitor as logs (batched, within a second or so).
    deadline = time.monotonic() + 30
    while True:
        logs = json_of(lepton_cli(platform, "-o", "json", "monitor", "logs", name, "--since", "10m"))
        if len(logs) >= 1 or time.monotonic() > deadline:  # type: ignore[arg-type]
            break
        time.sleep(0.5)
    assert isinstance(logs, list) and logs and all(log["deployment"] == name for log in logs)
    assert logs[0]["batch_rows"] == "3" and len(logs[0]["outputs"]) == 3  # int64 is a JSON string in proto3
    np.testing.assert_allclose(logs[0]["outputs"], pipeline.predictions[:3], atol=1e-6)
    summary = json_of(lepton_cli(platform, "-o", "json", "monitor", "summary", name, "--since", "10m"))
    assert isinstance(summary, dict) and int(summary["logs"]) == len(logs) and int(summary.get("errors", 0)) == 0
    assert json_of(lepton_cli(platform, "-o", "json", "monitor", "logs", name, "--errors")) == []
    listed = json_of(lepton_cli(platform, "-o", "json", "deployments", "list"))
    assert name in [d["name"] for d in listed]  # type: ignore[union-attr, index]
    assert json_of(lepton_cli(platform, "-o", "json", "deployments", "delete", name)) == {"deleted": name}
    assert lepton_cli(platform, "deployments", "show", name).returncode == 4
    algorithms = json_of(lepton_cli(platform, "-o", "json", "jobs", "algorithms"))
    ridge = next(a for a in algorithms if a["name"] == "ridge")  # type: ignore[union-attr, index]
    assert ridge["task"] == "regression" and "alpha" in ridge["params"]
    edge = tmp_path / "edge.zip"
    exported = json_of(lepton_cli(platform, "-o", "json", "models", "export", model, "--out", str(edge)))
    assert exported == {"path": str(edge), "bytes": edge.stat().st_size} and edge.read_bytes()[:2] == b"PK"
    models = json_of(lepton_cli(platform, "-o", "json", "models", "list"))
    (listed_model,) = [m for m in models if m["name"] == model]  # type: ignore[union-attr, index]
    assert listed_model["latest_version"] >= version  # other tests may have trained it again


def running_job(platform: EmbeddedPlatform, model: str) -> str:
    """The id of the running job that trains ``model``, as `lepton jobs list` shows it ("" if none)."""
    listed = json_of(lepton_cli(platform, "-o", "json", "jobs", "list", "--state", "running"))
    assert isinstance(listed, list)
    return next((j["job_id"] for j in listed if j["model_name"] == model), "")


def test_a_training_is_cancelled_from_another_shell(pipeline: PipelineResult, platform: EmbeddedPlatform) -> None:
    """`lepton jobs cancel` stops a running `lepton train`, which then fails; `jobs watch` says so."""
    env = {**os.environ, "LEPTON_URL": platform.url, "LEPTON_API_KEY": platform.api_key}
    model = unique("cli-cancel")
    argv = ["train", pipeline.dataset_version.version_id, "-a", "mlp_regressor", "--name", model]
    params = ["-p", "epochs=10000", "-p", "early_stopping_patience=0"]
    with subprocess.Popen([str(LEPTON), *argv, *params], stderr=subprocess.PIPE, text=True, env=env) as train:
        deadline = time.monotonic() + 60
        while not (job_id := running_job(platform, model)):
            assert train.poll() is None and time.monotonic() < deadline, "the job never ran"
        cancelled = json_of(lepton_cli(platform, "-o", "json", "jobs", "cancel", job_id))
        assert isinstance(cancelled, dict) and cancelled["job_id"] == job_id
        assert cancelled["state"] in ("running", "cancelled")  # running until the worker stops it
        _, stderr = train.communicate(timeout=60)
    assert train.returncode == 1 and f"training job {job_id} was cancelled" in flat(stderr), stderr
    watched = lepton_cli(platform, "-o", "json", "jobs", "watch", job_id)
    assert watched.returncode == 1 and json.loads(watched.stdout)["state"] == "cancelled"


def test_every_command_refuses_a_wrong_argument(
    pipeline: PipelineResult,
    platform: EmbeddedPlatform,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEPTON_URL", platform.url)
    monkeypatch.setenv("LEPTON_API_KEY", platform.api_key)
    monkeypatch.delenv("LEPTON_TLS_CA_FILE", raising=False)
    dataset, model = pipeline.dataset_version.version_id, pipeline.model_version.model_name
    missing = unique("missing")
    not_json = tmp_path / "not.json"
    not_json.write_text("{steps: [}")
    bad_recipe = tmp_path / "recipe.json"
    bad_recipe.write_text(json.dumps({"steps": [{"op": "shuffle"}]}))
    rows_txt = tmp_path / "rows.txt"
    rows_txt.write_text("1,2\n")
    # (command, its arguments, exit code, what the message must say)
    cases: list[tuple[tuple[str, ...], list[str], int, str]] = [
        (("data", "upload"), [str(tmp_path / "absent.csv")], 2, "absent.csv' does not exist"),
        (("data", "list"), ["extra"], 2, "unexpected extra argument"),
        (("data", "show"), [missing], 4, f"'{missing}' does not exist"),
        (("data", "versions"), [missing], 4, f"'{missing}' does not exist"),
        (("data", "validate"), [dataset, "--rules", str(not_json)], 2, "Invalid value for --rules: /"),
        (("data", "profile"), [missing], 4, f"'{missing}' does not exist"),
        (("data", "apply"), [dataset, str(bad_recipe)], 3, "recipe.steps[0].op: unknown op 'shuffle'"),
        (("data", "split"), [dataset, "--train", "0.5"], 3, "train + validation + test must be 1"),
        (("data", "delete"), [missing], 4, f"'{missing}' does not exist"),
        (("train",), [dataset, "-a", "ridge", "-p", "alpha"], 2, "--param: expected KEY=VALUE, got 'alpha'"),
        (("jobs", "list"), ["--state", "stuck"], 2, "--state: use one of queued"),
        (("jobs", "watch"), ["job_missing"], 4, "training job 'job_missing' does not exist"),
        (("jobs", "cancel"), [pipeline.job.job_id], 8, "already succeeded"),
        (("jobs", "algorithms"), ["extra"], 2, "unexpected extra argument"),
        (("models", "list"), ["extra"], 2, "unexpected extra argument"),
        (("models", "show"), [missing], 4, f"model '{missing}' does not exist"),
        (("models", "lineage"), [model, "--version", "latest"], 2, "'--version': Input should be a valid integer"),
        (("models", "promote"), [model, "99"], 4, f"model '{model}' has no version 99"),
        (("models", "tag"), [model, "--status", "archived"], 2, "models have no status; give --version"),
        (("models", "search"), ["--status", "retired"], 3, "status: must be one of ['ready', 'archived']"),
        (("models", "evaluate"), [model, "--rows", "some"], 3, "rows: must be 'holdout' or 'all'"),
        (("models", "export"), [model], 2, "Missing option '--out'"),
        (("models", "delete"), [model], 2, "Missing option '--version'"),
        (("deploy",), ["api", "-m", model, "--canary", "half"], 2, "--canary: expected shares like 0.1,0.5"),
        (("deployments", "create"), ["Not A Name", "-m", model], 3, "name: expected a deployment name"),
        (("deployments", "list"), ["extra"], 2, "unexpected extra argument"),
        (("deployments", "show"), [missing], 4, f"deployment '{missing}' does not exist"),
        (("deployments", "rollback"), [missing], 4, f"deployment '{missing}' does not exist"),
        (("deployments", "delete"), [missing], 4, f"deployment '{missing}' does not exist"),
        (("monitor", "metrics"), [model, "--last", "soon"], 2, "'--last': Input should be a valid number"),
        (("monitor", "drift"), [missing], 4, f"deployment '{missing}' does not exist"),
        (("monitor", "alerts"), [missing], 4, f"deployment '{missing}' does not exist"),
        (("monitor", "logs"), [model, "--since", "lately"], 2, "--since: expected a duration"),
        (("monitor", "summary"), [model, "--top", "0"], 2, "'--top'"),
        (("events", "tail"), ["--since", "yesterday"], 2, "--since: expected a duration"),
        (("events", "dead-letters"), ["--consumer", "nosuch"], 3, "'nosuch' is not a consumer of the platform"),
        (("events", "replay"), ["999999999"], 4, "dead letter 999999999 not found"),
        (("predict",), [model, str(rows_txt)], 2, "expected one of ['.csv', '.json', '.jsonl', '.parquet']"),
        (("up",), ["extra"], 2, "unexpected extra argument"),
        (("keys", "create"), ["--role", "viewer", "--expires", "soon"], 2, "--expires: expected a duration"),
        (("keys", "list"), ["extra"], 2, "unexpected extra argument"),
        (("keys", "revoke"), ["key_000000000000"], 4, "no key 'key_000000000000'"),
        (("keys", "rotate"), ["ci", "--grace", "an hour"], 2, "--grace: expected a duration"),
        (("whoami",), ["extra"], 2, "unexpected extra argument"),
        (("audit",), ["--since", "lately"], 2, "--since: expected a duration"),
        (("usage",), ["--tenant", "Not-A-Tenant"], 3, "tenant: "),
        (("plans", "list"), ["extra"], 2, "unexpected extra argument"),
        (("plans", "set"), ["acme", "gold"], 3, "plan: 'gold' is not a plan; expected one of trial, team, unlimited"),
        (("tenants", "delete"), [missing], 2, "cannot be undone: pass --yes"),
        (("tenants", "deletion"), [missing], 4, f"tenant '{missing}' was never deleted"),
    ]
    assert {path for path, *_ in cases} == command_paths(), "every command needs a wrong-argument case here"
    for path, args, code, message in cases:
        ran = lepton_inprocess(capsys, *path, *args)
        assert (ran.code, message in ran.stderr) == (code, True), (path, args, ran)
        assert "Traceback" not in ran.stderr, ran.stderr
    # The global options, and the command line itself.
    refusals = [
        (["--api-key", "wrong-key", "data", "list"], 5, "Pass api_key= or set LEPTON_API_KEY"),
        (["--url", "ftp://example.com:1", "data", "list"], 3, "url: scheme 'ftp' is not supported"),
        (["--output", "yaml", "data", "list"], 2, "--output: use table or json"),
        (["--ca-file", str(tmp_path / "absent.pem"), "data", "list"], 2, "absent.pem' does not exist"),
        (["data", "shuffle"], 2, "No such command 'shuffle'"),
        (["--verbose"], 2, "No such option: --verbose"),
        (["data", "apply", dataset, str(not_json)], 2, "not.json is not JSON: Expecting property name"),
        (["predict", model, str(tmp_path / "absent.csv")], 2, "absent.csv' does not exist"),
    ]
    for args, code, message in refusals:
        ran = lepton_inprocess(capsys, *args)
        assert (ran.code, message in ran.stderr) == (code, True), (args, ran)
    bare = lepton_inprocess(capsys)  # no command: the help, and a usage error's exit code
    assert bare.code == 2 and "Usage: lepton" in flat(bare.stdout) and "deployments" in bare.stdout, bare
    # And the executable itself maps a usage error the same way (no Python traceback).
    usage = lepton_cli(platform, "data", "versions")
    assert usage.returncode == 2 and "Missing argument 'name'" in usage.stderr and "Traceback" not in usage.stderr


def test_up_serves_the_platform_until_sigterm(tmp_path: Path) -> None:
    """`lepton up`: the whole platform on this machine, as `make up` starts it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEPTON_")}
    env.update(LEPTON_API_KEY="up-key", LEPTON_HOME=str(tmp_path), LEPTON_BASE_PORT="0", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([str(LEPTON), "up"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        exports = [line.split("export ", 1)[1].split() for line in lines if "export LEPTON_URL=" in line]
        assert exports, "".join(lines)
        client_env = {**env, **dict(pair.split("=", 1) for pair in exports[0])}
        assert client_env["LEPTON_API_KEY"] == "up-key"
        listed = subprocess.run(
            [str(LEPTON), "-o", "json", "data", "list"], capture_output=True, text=True, env=client_env, timeout=60
        )
        assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr  # a new, empty platform
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0
