"""Predicts with a Lepton edge bundle, using only numpy and onnxruntime.

    python runner.py MODEL_DIR INPUT.csv    # one JSON object per input row on stdout

or from Python: ``EdgeModel(model_dir).predict([{"age": 52, "bmi": None}, ...])``.

MODEL_DIR is the unzipped bundle (``model.onnx`` and ``signature.json``). The input
tensor's name, its columns, their order and its dtype come from ``signature.json``;
every row must name every column (extra ones are ignored). A missing value is an empty
cell, ``NA``, ``NaN``, ``null`` or ``None``: it is sent as NaN, which the model treats
as missing. ``true`` and ``false`` are 1 and 0. Each output line holds the outputs
``signature.json`` lists, by name: ``{"prediction": ...}``, with ``"probabilities"``
(in ``signature.json``'s ``classes`` order) for classifiers. A one-column output gives
a number per row, a wider one a list.
Runs on Python 3.8 and later (JetPack 5 ships 3.8).

This file is ``lepton_ml.onnx_export.edge_runner``; the edge bundle carries a copy of
it as ``runner.py``. It must stay standalone: the standard library, numpy and
onnxruntime, nothing from Lepton, and no syntax newer than Python 3.8.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

MISSING = frozenset({"", "na", "nan", "null", "none"})
BATCH_ROWS = 4096


def _number(value: Any, column: str, row: int) -> float:
    if value is None:
        return float("nan")
    if isinstance(value, (bool, int, float)):  # a tuple, not X | Y: this runs on Python 3.8
        return float(value)
    text = str(value).strip()
    lowered = text.lower()
    if lowered in MISSING:
        return float("nan")
    if lowered in ("true", "false"):
        return 1.0 if lowered == "true" else 0.0
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"row {row}: column {column!r} is {value!r}; expected a number") from None


class EdgeModel:
    """An unzipped edge bundle, ready to predict."""

    def __init__(self, model_dir: str | Path) -> None:
        root = Path(model_dir)
        meta = json.loads((root / "signature.json").read_text(encoding="utf-8"))
        self.input_name: str = meta["input"]["name"]
        self.columns: list[str] = list(meta["input"]["columns"])
        self.dtype = np.dtype(meta["input"]["dtype"])
        self.outputs: list[str] = [o["name"] for o in meta["outputs"]]
        #: The outputs with one value per row (``[batch, 1]``); the others give a list per row.
        self.scalar_outputs: set[str] = {o["name"] for o in meta["outputs"] if list(o["shape"][1:]) == [1]}
        self.classes = meta.get("classes")
        self.session = ort.InferenceSession(str(root / "model.onnx"), providers=["CPUExecutionProvider"])

    def matrix(self, rows: list[Mapping[str, Any]], first_row: int = 0) -> np.ndarray[Any, Any]:
        """The input tensor for ``rows``."""
        values = []
        for i, row in enumerate(rows, start=first_row):
            absent = [c for c in self.columns if c not in row]
            if absent:
                raise ValueError(f"row {i} lacks columns {absent}")
            values.append([_number(row[c], c, i) for c in self.columns])
        return np.asarray(values, dtype=np.float64).reshape(len(rows), len(self.columns)).astype(self.dtype)

    def predict(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One ``{"prediction": ..., ["probabilities": [...]]}`` per row, in order."""
        pending = list(rows)
        results: list[dict[str, Any]] = []
        for start in range(0, len(pending), BATCH_ROWS):
            x = self.matrix(pending[start : start + BATCH_ROWS], start)
            outputs = self.session.run(self.outputs, {self.input_name: x})
            named = dict(zip(self.outputs, outputs))  # noqa: B905 - zip(strict=) needs Python 3.10
            for i in range(len(x)):
                results.append({name: self._row(name, named[name], i) for name in self.outputs})
        return results

    def _row(self, name: str, values: Any, i: int) -> Any:
        if name in self.scalar_outputs:
            return float(values[i, 0])
        return [float(v) for v in values[i]]


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def main(argv: list[str] | None = None) -> int:
    """``python runner.py MODEL_DIR INPUT.csv``: prints one JSON object per row; 2 on bad usage, 1 on bad rows."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python runner.py MODEL_DIR INPUT.csv", file=sys.stderr)
        return 2
    model = EdgeModel(args[0])
    try:
        predictions = model.predict(read_csv(args[1]))
    except ValueError as exc:
        print(f"{args[1]}: {exc}", file=sys.stderr)
        return 1
    for item in predictions:
        sys.stdout.write(json.dumps(item) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
