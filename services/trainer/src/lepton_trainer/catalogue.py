"""The algorithms the trainer can run, with typed, range-checked hyper-parameters."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sklearn.linear_model import LinearRegression, Ridge

from lepton_core.errors import InvalidArgument


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its type, default and allowed range."""

    kind: type
    default: Any
    low: float | None = None
    high: float | None = None

    def parse(self, name: str, raw: str) -> Any:
        try:
            if self.kind is bool:
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                value: Any = raw.lower() in ("true", "1")
            else:
                value = self.kind(raw)
        except ValueError:
            raise InvalidArgument(f"expected a {self.kind.__name__}, got {raw!r}", field=f"params.{name}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"must be finite, got {raw!r}", field=f"params.{name}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise InvalidArgument(
                f"{value} is outside the allowed range [{self.low}, {self.high}]", field=f"params.{name}"
            )
        return value


@dataclass(frozen=True)
class Algorithm:
    name: str
    task: str
    build: Callable[..., Any]
    params: Mapping[str, Param] = field(default_factory=dict)

    def make(self, raw: Mapping[str, str]) -> tuple[Any, dict[str, Any]]:
        """The estimator for validated ``raw`` parameters, and the parameters used."""
        unknown = sorted(set(raw) - set(self.params))
        if unknown:
            raise InvalidArgument(
                f"{self.name} has no parameter {unknown[0]!r}; known: {sorted(self.params)}",
                field=f"params.{unknown[0]}",
            )
        values = {k: p.default for k, p in self.params.items()}
        values.update({k: self.params[k].parse(k, v) for k, v in raw.items()})
        return self.build(**values), values


CATALOGUE: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("linear_regression", "regression", LinearRegression, {"fit_intercept": Param(bool, True)}),
        Algorithm(
            "ridge", "regression", Ridge, {"alpha": Param(float, 1.0, 0.0, 1e9), "fit_intercept": Param(bool, True)}
        ),
    )
}


def algorithm(name: str) -> Algorithm:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise InvalidArgument(
            f"unknown algorithm {name!r}; available: {', '.join(sorted(CATALOGUE))}", field="algorithm"
        ) from None
