"""The MLflow side of ``bench/journey_bench.py``: the same user journey, done the MLflow way.

Run by ``.venv-mlflow/bin/python`` (``requirements/mlflow-lock.txt``), never by the
platform's venv. It starts, imports MLflow and creates its tracking store (a sqlite file
and an artifact folder under ``--workdir``: untimed, reported as ``import_s`` and
``store_s``, as the platform's start is untimed on our side), prints one ``READY {json}``
line, then runs one journey per JSON line read from stdin and answers each with a
``RESULT {json}`` line. A request is ``{"name": ..., "rows": [i, ...]}``: a fresh model
name and the CSV rows to ask the served model about.

One journey, each stage timed with ``time.perf_counter``:

1. dataset: ``mlflow.start_run``, ``pd.read_csv``, ``mlflow.data.from_pandas`` + ``log_input``
   (MLflow's record of a dataset: name, digest, schema, source);
2. train: ``LinearRegression().fit`` on the training rows, ``log_params``;
3. evaluate: predictions on the held-out rows, ``log_metrics`` (r2, rmse, mae);
4. register: ``mlflow.sklearn.log_model`` (explicit ``pip_requirements``, so MLflow does
   not infer them; a signature from ``infer_signature``), the run ends, ``register_model``,
   ``set_registered_model_alias(name, "champion", version)``;
5. deploy: ``mlflow models serve -m models:/<name>@champion --env-manager local`` in its
   own process group, until ``GET /ping`` answers 200 (polled every 20 ms);
6. predict: the first ``POST /invocations`` (``dataframe_split``) returning predictions.

The server is then stopped (untimed). The training rows are the platform's held-out
split reproduced: ``np.random.default_rng(seed).permutation(n)``, the first
``round(n * test_fraction)`` held out (``lepton_ml.splits.holdout_split``; the bench
checks that the rows are the same by their digest), so both sides fit the same rows.
"""

from __future__ import annotations

import time

_T_IMPORT = time.perf_counter()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import mlflow  # noqa: E402
import mlflow.sklearn  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sklearn  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score  # noqa: E402

IMPORT_S = time.perf_counter() - _T_IMPORT
ALIAS = "champion"
POLL_S = 0.02
SERVE_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def holdout_split(n_rows: int, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The platform's split (``lepton_ml.splits.holdout_split``), reproduced in three lines."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_test = max(1, round(n_rows * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def http(url: str, body: bytes | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status), response.read()


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (uvicorn and its workers), SIGKILL after 10 s."""
    if server.poll() is not None:
        return
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
    except ProcessLookupError:
        pass


def serve_env() -> dict[str, str]:
    """This environment with the venv's bin first on PATH, as in an activated venv: ``mlflow
    models serve`` runs ``uvicorn`` by name."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}


def journey(args: argparse.Namespace, name: str, rows: list[int]) -> dict[str, Any]:
    stages: dict[str, float] = {}
    detail: dict[str, float] = {}
    clock = time.perf_counter
    started_at = time.time()
    t = clock()

    def lap(stage: str) -> None:
        nonlocal t
        now = clock()
        stages[stage] = now - t
        t = now

    # 1. dataset
    mlflow.start_run(run_name=name)
    frame = pd.read_csv(args.csv)
    mlflow.log_input(
        mlflow.data.from_pandas(frame, source=str(args.csv), targets=args.target, name=name), context="training"
    )
    lap("dataset")
    # 2. train
    features = [c for c in frame.columns if c != args.target]
    x = frame[features]
    y = frame[args.target]
    train_idx, test_idx = holdout_split(len(frame), args.seed, args.test_fraction)
    model = LinearRegression().fit(x.iloc[train_idx], y.iloc[train_idx])
    mlflow.log_params({"algorithm": "linear_regression", "fit_intercept": True, "train_rows": len(train_idx)})
    lap("train")
    # 3. evaluate
    held_out = model.predict(x.iloc[test_idx])
    truth = y.iloc[test_idx]
    metrics = {
        "r2": float(r2_score(truth, held_out)),
        "rmse": float(np.sqrt(mean_squared_error(truth, held_out))),
        "mae": float(mean_absolute_error(truth, held_out)),
    }
    mlflow.log_metrics(metrics)
    lap("evaluate")
    # 4. register
    mark = clock()
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        pip_requirements=[
            f"scikit-learn=={sklearn.__version__}",
            f"pandas=={pd.__version__}",
            f"numpy=={np.__version__}",
        ],
        signature=infer_signature(x.iloc[train_idx], model.predict(x.iloc[train_idx])),
    )
    mlflow.end_run()
    detail["log_model_s"] = clock() - mark
    mark = clock()
    version = mlflow.register_model(info.model_uri, name)
    detail["register_model_s"] = clock() - mark
    mark = clock()
    MlflowClient().set_registered_model_alias(name, ALIAS, version.version)
    detail["set_alias_s"] = clock() - mark
    lap("register")
    # 5. deploy
    port = free_port()
    log = (args.workdir / f"serve-{name}.log").open("wb")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{name}@{ALIAS}",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=args.workdir,
        env=serve_env(),
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = clock() + SERVE_TIMEOUT_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {server.returncode}; see {log.name}")
            try:
                if http(f"{base}/ping", timeout=1.0)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if clock() > deadline:
                raise TimeoutError(f"mlflow models serve did not answer /ping within {SERVE_TIMEOUT_S:.0f}s")
            time.sleep(POLL_S)
        lap("deploy")
        # 6. first prediction
        body = json.dumps({"dataframe_split": x.iloc[rows].to_dict(orient="split", index=False)}).encode()
        status, reply = http(f"{base}/invocations", body)
        predictions = [float(v) for v in json.loads(reply)["predictions"]]
        lap("predict")
        if status != 200:
            raise RuntimeError(f"POST /invocations answered {status}: {reply[:300]!r}")
    finally:
        stop(server)
        log.close()
    return {
        "name": name,
        "started_at": started_at,
        "stages_s": stages,
        "total_s": sum(stages.values()),
        "detail_s": detail,
        "model_version": int(version.version),
        "metrics": metrics,
        "predictions": predictions,
        "in_process": [float(v) for v in model.predict(x.iloc[rows])],
        "train_rows_sha256": hashlib.sha256(np.asarray(train_idx, dtype=np.int64).tobytes()).hexdigest(),
        "features": features,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--target", default="target")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    args = parser.parse_args()
    t0 = time.perf_counter()
    uri = f"sqlite:///{args.workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    os.environ["MLFLOW_TRACKING_URI"] = uri  # for `mlflow models serve`, to resolve models:/
    experiment = MlflowClient().create_experiment("journey", artifact_location=(args.workdir / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    ready = {
        "import_s": IMPORT_S,
        "store_s": time.perf_counter() - t0,
        "mlflow": mlflow.__version__,
        "scikit-learn": sklearn.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
    }
    print("READY " + json.dumps(ready), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            result = journey(args, request["name"], request["rows"])
        except Exception as exc:
            if mlflow.active_run() is not None:
                mlflow.end_run(status="FAILED")
            result = {"name": request["name"], "error": f"{type(exc).__name__}: {exc}"}
        print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
