"""The skops allow-list (lepton_ml.artifacts.TRUSTED_TYPES) covers what the catalogue makes, exactly.

Every algorithm is trained, in the variants that change what its model holds (kernels, solvers,
class labels, neighbour metrics), and the types skops does not trust itself must each be on the
list: a model the trainer makes must always load. The list holds no type no algorithm makes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import skops.io as sio

from lepton_ml import artifacts
from lepton_trainer.catalogue import CATALOGUE, CLASSIFICATION, CLUSTERING

VARIANTS: dict[str, list[dict[str, str]]] = {
    "svc": [{"kernel": k} for k in ("linear", "rbf", "poly", "sigmoid")],
    "svr": [{"kernel": k} for k in ("linear", "rbf", "poly", "sigmoid")],
    "logistic_regression": [{"solver": s} for s in ("lbfgs", "liblinear", "newton-cg", "saga")],
    "random_forest_classifier": [{"n_estimators": "3", "max_features": m} for m in ("sqrt", "log2", "all")],
    "random_forest_regressor": [{"n_estimators": "3", "max_features": m} for m in ("sqrt", "log2", "all")],
    "knn_classifier": [{"p": p, "weights": w} for p in ("1", "2", "3") for w in ("uniform", "distance")],
    "knn_regressor": [{"p": p, "weights": w} for p in ("1", "2", "3") for w in ("uniform", "distance")],
}


def _targets(task: str, y: npt.NDArray[np.float64]) -> Iterator[npt.NDArray[np.float64] | None]:
    if task == CLUSTERING:
        yield None
    elif task == CLASSIFICATION:
        yield (y > 0).astype(np.float64)  # two classes
        yield (y > 0).astype(np.float64) * 3 + 1  # two classes, other labels
        yield np.digitize(y, [-1.0, 1.0]).astype(np.float64)  # three classes
    else:
        yield y


def _untrusted_types_made() -> dict[str, set[str]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4))
    y = x @ np.array([1.0, 2.0, -1.0, 0.5]) + rng.normal(size=120)
    made: dict[str, set[str]] = {}
    for name, algo in CATALOGUE.items():
        if name.startswith("mlp_"):
            continue  # safetensors and JSON, never skops
        for params in VARIANTS.get(name, [{}]):
            for target in _targets(algo.task, y):
                model: Any
                model, _ = algo.make(params, seed=0)
                try:
                    model.fit(x) if target is None else model.fit(x, target)
                except ValueError:
                    continue  # a variant that does not take this target (liblinear, three classes)
                for t in sio.get_untrusted_types(data=sio.dumps(model)):
                    made.setdefault(t, set()).add(name)
    return made


def test_every_type_the_catalogue_makes_is_trusted_and_nothing_else() -> None:
    made = _untrusted_types_made()
    trusted = artifacts.trusted_types()
    missing = {t: sorted(algos) for t, algos in made.items() if t not in trusted}
    assert not missing, f"types our algorithms make that the allow-list refuses: {missing}"
    unused = set(artifacts.TRUSTED_TYPES) - set(made)
    assert not unused, f"allow-listed types no algorithm makes: {sorted(unused)}"
    assert not any(t.startswith("builtins.") for t in trusted)  # never a function such as builtins.eval
