"""The GPU serving check: Lepton models on Triton (from the nvidia-pytriton wheel) on a GPU host.

Two halves, because the deployer and a GPU host are different machines:

    python tools/gpu_check.py prepare KIT      # the deployer's side: train, convert, generate configs
    python tools/gpu_check.py run KIT OUT      # on the GPU host: start Triton, load, predict, compare, time

``prepare`` trains four small models on scikit-learn's datasets (ridge and an MLP on
diabetes, logistic regression and an MLP on breast cancer). For each it writes what the
deployer sends Triton's load API for ``instance_kind="gpu"`` and ``"cpu"``: the model
configuration (``lepton_deployer.triton_config.model_config``), the serving model and the bundle's
files with the extra files of the backend ``choose_backend`` picked. It adds 64 rows the
model was not trained on and the model's in-process predictions for them.

``run`` needs numpy, tritonclient, the Triton of nvidia-pytriton (``LEPTON_TRITON_ROOT``
when the wheel is unpacked rather than installed) and what a Lepton model imports in the
Python backend's stub (onnxruntime; torch for MLPs). For each model and instance kind
(``gpu`` only where ``nvidia-smi`` lists a GPU) it loads the model through the load API
with the files in the request and waits until it is ready. It sends the rows as the
deployer's smoke test does (8 a request, never logged) and compares the answers with the
in-process predictions (within the deployer's smoke-test tolerance). It times single-row and 64-row
requests and reads from Triton's log which runtime each instance chose. It writes
``report.json`` and ``report.md`` to OUT and exits 1 when a model failed to load or answer.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: The artifact public key in the kit (the kit's artifacts are signed with its private half, then dropped).
PUBLIC_KEY_FILE = "artifact-signing.pub.pem"
ROWS = 64
SMOKE_BATCH = 8
TIMED_REQUESTS = 200


def prepare(kit: Path) -> None:
    """Trains the models and writes one ``<id>.json`` per model into ``kit``."""
    import polars as pl
    from sklearn.datasets import load_breast_cancer, load_diabetes
    from sklearn.linear_model import LogisticRegression, Ridge

    from lepton_deployer.backends import choose_backend
    from lepton_deployer.records import ServingConfig
    from lepton_deployer.smoke import smoke_tolerance
    from lepton_deployer.triton_config import TRITON_FILES, model_config, serving_model_source
    from lepton_ml import artifacts
    from lepton_ml.mlp import MLPParams, Task, train_mlp
    from lepton_ml.signing import Signer

    kit.mkdir(parents=True, exist_ok=True)
    source = serving_model_source()
    # Artifacts are signed; the GPU host's Triton verifies them with the public key in the kit.
    signer = Signer.generate()
    (kit / PUBLIC_KEY_FILE).write_bytes(signer.trusted().pem())
    mlp = MLPParams(hidden_layers=[64, 32], epochs=40, seed=0, device="cpu")
    datasets: list[tuple[str, Any, Task]] = [
        ("diabetes", load_diabetes, "regression"),
        ("breast_cancer", load_breast_cancer, "classification"),
    ]
    for dataset, loader, task in datasets:
        frame = loader(as_frame=True).frame
        features = [c for c in frame.columns if c != "target"]
        x = frame[features].to_numpy(dtype=np.float64)
        y = frame["target"].to_numpy()
        train, held = slice(0, len(x) - ROWS), slice(len(x) - ROWS, len(x))
        linear = Ridge() if task == "regression" else LogisticRegression(max_iter=10_000)
        for kind, model in (
            ("linear", linear.fit(x[train], y[train])),
            ("mlp", train_mlp(x[train], y[train], task, mlp)),
        ):
            model_id = f"{dataset}-{kind}"
            signature = artifacts.Signature(
                features=features, target="target", task=task, algorithm=type(model).__name__
            )
            signed = artifacts.seal(artifacts.pack(model, signature), signer)
            files = artifacts.unpack_files(signed, signer.trusted())
            rows = pl.DataFrame({c: x[held][:, i] for i, c in enumerate(features)})
            backend, reason, extra = choose_backend("auto", files, rows.to_dict(as_series=False))
            expected = artifacts.Bundle(model, signature, None).predict(rows)
            shipped = {artifacts.ARTIFACT_FILE: signed, **extra}  # what the deployer sends: the exact names
            payload = {"file:1/model.py": source, **{f"file:1/{n}": d for n, d in shipped.items() if n in TRITON_FILES}}
            configs = {}
            for instance_kind in ("gpu", "cpu"):
                name = f"gpucheck--{model_id}-{instance_kind}"
                labels = {"tenant": "gpucheck", "deployment": model_id, "model_name": model_id, "model_version": "1"}
                serving = ServingConfig(instance_kind=instance_kind)
                # Prediction logging off: the check's Triton gets no NATS URL (it would only add a broker to carry).
                configs[instance_kind] = json.loads(model_config(name, signature, labels, serving, [1]))
            record = {
                "id": model_id,
                "algorithm": type(model).__name__,
                "task": task,
                "backend": backend,
                "backend_reason": reason,
                "configs": configs,
                "files": {k: base64.b64encode(v).decode() for k, v in payload.items()},
                "rows": x[held].tolist(),
                "expected": np.asarray(expected, dtype=np.float64).tolist(),
                "tolerance": smoke_tolerance(model),
            }
            (kit / f"{model_id}.json").write_text(json.dumps(record))
            print(f"{model_id}: {type(model).__name__}, backend {backend}: {reason}")


def host_info() -> dict[str, Any]:
    """What the GPU host has: GPUs, driver, Python, torch and onnxruntime builds."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "gpus": [],
    }
    info["gpus"] = _nvidia_smi("--query-gpu=name,memory.total,driver_version")
    try:
        import torch

        info["torch"] = f"{torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}"
    except ImportError:
        info["torch"] = "not installed"
    try:
        import onnxruntime as ort

        info["onnxruntime"] = f"{ort.__version__}, providers {ort.get_available_providers()}"
    except ImportError:
        info["onnxruntime"] = "not installed"
    return info


def _inputs(rows: np.ndarray[Any, Any]) -> list[Any]:
    import tritonclient.grpc as triton_grpc

    tensor = triton_grpc.InferInput("features", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(np.ascontiguousarray(rows, dtype=np.float64))
    return [tensor]


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def _nvidia_smi(query: str) -> list[str]:
    """The CSV lines ``nvidia-smi`` answers to ``query``; none where there is no NVIDIA GPU or driver."""
    try:
        smi = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in smi.stdout.splitlines() if line.strip()]


def check_model(
    client: Any, record: dict[str, Any], kind: str, control: dict[str, str], inference: dict[str, str]
) -> dict[str, Any]:
    """Loads one model as ``kind`` instances, smoke-tests and times it, then unloads it.

    ``control`` are the headers that open Triton's model control (the deployer's secret),
    ``inference`` those the served model requires of a request (the gateway's).
    """
    from tritonclient.utils import InferenceServerException

    config = record["configs"][kind]
    name = config["name"]
    files = {k: base64.b64decode(v) for k, v in record["files"].items()}
    rows = np.asarray(record["rows"], dtype=np.float64)
    expected = np.asarray(record["expected"], dtype=np.float64)
    result: dict[str, Any] = {"model": record["id"], "kind": kind, "backend": record["backend"]}
    started = time.perf_counter()
    try:
        client.load_model(name, headers=control, config=json.dumps(config), files=files, client_timeout=300)
        result["load_s"] = round(time.perf_counter() - started, 2)
        got = np.concatenate(
            [
                client.infer(
                    name, _inputs(rows[i : i + SMOKE_BATCH]), parameters={"lepton_check": "smoke"}, headers=inference
                )
                .as_numpy("prediction")
                .reshape(-1)
                for i in range(0, len(rows), SMOKE_BATCH)
            ]
        )
        diff = float(np.max(np.abs(got - expected)))
        atol, rtol = record["tolerance"]
        equal = bool(np.allclose(got, expected, rtol=rtol, atol=atol))
        result.update(max_abs_diff=diff, equal=equal, tolerance=[atol, rtol], rows=len(rows))
        for size in (1, ROWS):
            inputs = _inputs(rows[:size])
            client.infer(name, inputs, headers=inference)  # warm
            times = []
            for _ in range(TIMED_REQUESTS):
                t0 = time.perf_counter()
                client.infer(name, inputs, headers=inference)
                times.append(time.perf_counter() - t0)
            result[f"latency_{size}_rows"] = _percentiles(times)
        if kind == "gpu":
            result["gpu_processes"] = _nvidia_smi("--query-compute-apps=pid,process_name,used_memory")
    except InferenceServerException as exc:
        result["error"] = exc.message()
    except ValueError as exc:  # an answer that is not the tensor asked for
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            client.unload_model(name, headers=control)
        except InferenceServerException:
            pass
    return result


RUNTIME_LINE = re.compile(r"model (\S+) ready: (\S+) on (.*), (\d+) features")


def run(kit: Path, out: Path) -> int:
    """Runs the check on this host; returns the exit status."""
    import tritonclient.grpc as triton_grpc

    from lepton_platform.processes import TritonServer

    out.mkdir(parents=True, exist_ok=True)
    records = [json.loads(p.read_text()) for p in sorted(kit.glob("*.json"))]
    info = host_info()
    print(json.dumps(info, indent=2), flush=True)
    kinds = ["gpu", "cpu"] if info["gpus"] else ["cpu"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        triton = TritonServer(Path(tmp), artifact_public_key_file=kit / PUBLIC_KEY_FILE)
        info["triton_start_s"] = round(time.perf_counter() - t0, 2)
        client = triton_grpc.InferenceServerClient(triton.url)
        try:
            info["triton_version"] = client.get_server_metadata().version
            for record in records:
                for kind in kinds:
                    result = check_model(
                        client, record, kind, triton.control.grpc_headers(), triton.inference_headers()
                    )
                    print(json.dumps(result), flush=True)
                    results.append(result)
        finally:
            client.close()
            triton.stop()
            log = (Path(tmp) / "tritonserver.log").read_text(errors="replace")
            (out / "tritonserver.log").write_text(log[-1_000_000:])
    runtimes = {m.group(1): m.group(3) for m in RUNTIME_LINE.finditer(log)}
    for result in results:
        result["runtime"] = runtimes.get(f"gpucheck--{result['model']}-{result['kind']}", "")
    failed = [r for r in results if "error" in r or not r.get("equal")]
    (out / "report.json").write_text(json.dumps({"host": info, "results": results}, indent=2))
    (out / "report.md").write_text(report_md(info, results))
    print((out / "report.md").read_text())
    return 1 if failed else 0


def report_md(info: dict[str, Any], results: list[dict[str, Any]]) -> str:
    lines = [
        f"- GPUs: {'; '.join(info['gpus']) or 'none'}",
        f"- Triton {info.get('triton_version', '?')} (nvidia-pytriton's build), "
        f"started in {info.get('triton_start_s')} s",
        f"- Python {info['python']}, numpy {info['numpy']}; torch {info.get('torch')}; "
        f"onnxruntime {info.get('onnxruntime')}",
        "",
        "| model | instances | backend | runtime in the stub | load s | max abs diff | p50/p99 ms, 1 row | "
        "p50/p99 ms, 64 rows |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            error = r["error"].replace("|", "/").replace("\n", " ")[:300]
            lines.append(f"| {r['model']} | {r['kind']} | {r['backend']} | {r.get('runtime', '')} | error: {error} |")
            continue
        one, many = r["latency_1_rows"], r[f"latency_{ROWS}_rows"]
        lines.append(
            f"| {r['model']} | {r['kind']} | {r['backend']} | {r['runtime']} | {r['load_s']} | "
            f"{r['max_abs_diff']:.2g} ({'equal' if r['equal'] else 'DIFFERS'}) | "
            f"{one['p50_ms']}/{one['p99_ms']} | {many['p50_ms']}/{many['p99_ms']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="train the models and write the kit (the deployer's side)")
    p.add_argument("kit", type=Path)
    r = sub.add_parser("run", help="load, check and time the kit's models on this host's Triton")
    r.add_argument("kit", type=Path)
    r.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.kit)
        return 0
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return run(args.kit, args.out)


if __name__ == "__main__":
    sys.exit(main())
