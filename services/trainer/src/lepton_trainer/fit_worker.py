"""The fit process: ``python -m lepton_trainer.fit_worker``, then a directory on stdin.

The trainer runs every fit in a child process so that cancelling a job is
terminating a process (scikit-learn cannot be interrupted inside ``fit``), and so a
crash inside a native library takes down the fit, not the worker. Inputs and
outputs are files in ``<dir>`` (no pickle): ``job.json`` and ``data.parquet`` in,
``artifact.zip`` out, or ``error.json`` for a user error (exit code 3). Progress goes
to stdout as one JSON object per line.

Importing scikit-learn and skops takes seconds, so the worker starts the next fit
process ahead of time: it imports everything, then waits for its directory on
stdin. Each process fits one job and exits, so no state leaks between jobs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import polars as pl
import torch

from lepton_core.errors import LeptonError
from lepton_trainer.core import JobRecord, fit

USER_ERROR_EXIT = 3


def _progress(stage: str, progress: float, metrics: dict[str, float]) -> None:
    sys.stdout.write(json.dumps({"stage": stage, "progress": progress, "metrics": metrics}) + "\n")
    sys.stdout.flush()


def main(workdir: Path) -> int:
    # One fit per process and the worker's other jobs in other processes: torch's
    # intra-op threads only contend (4 s vs 30-46 s for an MLP on a busy 2-core host).
    torch.set_num_threads(int(os.environ.get("LEPTON_TORCH_THREADS", "1")))
    job = JobRecord.model_validate_json((workdir / "job.json").read_text())
    frame = pl.read_parquet(workdir / "data.parquet")
    try:
        artifact = fit(job, frame, _progress)
    except LeptonError as exc:
        (workdir / "error.json").write_text(json.dumps({"message": exc.message, "field": exc.field}))
        return USER_ERROR_EXIT
    (workdir / "artifact.zip.tmp").write_bytes(artifact)
    (workdir / "artifact.zip.tmp").rename(workdir / "artifact.zip")
    return 0


if __name__ == "__main__":
    line = sys.stdin.readline().strip()
    sys.exit(main(Path(line)) if line else 0)
