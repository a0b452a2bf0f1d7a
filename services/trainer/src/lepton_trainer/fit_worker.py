"""The fit process: ``python -m lepton_trainer.fit_worker``, then job directories on stdin.

The trainer runs every fit in a child process so that cancelling a job is
terminating a process (scikit-learn cannot be interrupted inside ``fit``), and so a
crash inside a native library takes down the fit, not the worker. Inputs and
outputs are files in ``<dir>`` (no pickle): ``job.json`` and ``data.parquet`` in,
``artifact.zip`` out, or ``error.json`` for a user error (exit code 3). Progress goes
to stdout as one JSON object per line.

Importing scikit-learn, skops and torch takes seconds, so one fit process serves a
worker's jobs one after another: it reads a directory per line on stdin and answers
``{"done": <code>}`` (0 ok, 3 user error, 1 unexpected) on stdout after the
progress lines. Cancelling a job kills the process; the worker starts a new one.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import polars as pl

from lepton_core.errors import LeptonError
from lepton_trainer.core import USER_ERROR_EXIT, JobRecord, fit, score_trial


def _progress(stage: str, progress: float, metrics: dict[str, float]) -> None:
    sys.stdout.write(json.dumps({"stage": stage, "progress": progress, "metrics": metrics}) + "\n")
    sys.stdout.flush()


def main(workdir: Path) -> int:
    job = JobRecord.model_validate_json((workdir / "job.json").read_text())
    frame = pl.read_parquet(workdir / "data.parquet")
    try:
        if job.kind == "trial":
            _progress("fitting", 0.0, {})
            score = score_trial(job, frame)
            (workdir / "score.json").write_text(json.dumps({"score": score}))
            return 0
        artifact = fit(job, frame, _progress)
    except LeptonError as exc:
        (workdir / "error.json").write_text(json.dumps({"message": exc.message, "field": exc.field}))
        return USER_ERROR_EXIT
    (workdir / "artifact.zip.tmp").write_bytes(artifact)
    (workdir / "artifact.zip.tmp").rename(workdir / "artifact.zip")
    return 0


def serve() -> None:
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        try:
            code = main(Path(path))
        except Exception:
            traceback.print_exc()
            code = 1
        sys.stdout.write(json.dumps({"done": code}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
