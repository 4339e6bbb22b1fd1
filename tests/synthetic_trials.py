"""Synthetic trials tables for the analysis tests: a planted model whose answer is known.

``PLANTED`` is a model spec over a small conditional space: ``a`` (the only
parameter that matters in :func:`planted_accuracy`), nuisance ``b`` and
``lr`` (log scale), depth ``n_layers`` with widths ``w_1``/``w_2``/``w_3``
(``w_i`` inactive when ``i > n_layers``) and a switch ``gate`` whose rate ``g``
is inactive when the switch is off.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from bioplaus.models.registry import ModelSpec

SPACE = {
    "a": FloatDistribution(0.0, 1.0),
    "b": FloatDistribution(0.0, 1.0),
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "n_layers": IntDistribution(1, 3),
    "w_1": IntDistribution(10, 100),
    "w_2": IntDistribution(10, 100),
    "w_3": IntDistribution(10, 100),
    "gate": CategoricalDistribution([False, True]),
    "g": FloatDistribution(0.0, 1.0),
}
DEFAULT = {"a": 0.1, "b": 0.5, "lr": 1e-2, "n_layers": 1, "w_1": 50, "w_2": 50, "w_3": 50,
           "gate": False, "g": 0.5}


def planted_inactive(point):
    names = [f"w_{i}" for i in range(int(point["n_layers"]) + 1, 4)]
    if not point["gate"]:
        names.append("g")
    return names


PLANTED = ModelSpec(name="planted", label="Planted rule", build=None, search_space=lambda options: dict(SPACE),
                    default_params=DEFAULT, inactive=planted_inactive)


def planted_accuracy(points):
    """Accuracy that depends on ``a`` only: 0.2 + 0.6 a."""
    return np.array([0.2 + 0.6 * p["a"] for p in points])


def sample_points(n, rng, space=SPACE):
    points = []
    for _ in range(n):
        point = {}
        for name, d in space.items():
            if isinstance(d, CategoricalDistribution):
                point[name] = d.choices[int(rng.integers(len(d.choices)))]
            elif isinstance(d, IntDistribution):
                point[name] = int(rng.integers(d.low, d.high + 1))
            elif d.log:
                point[name] = float(np.exp(rng.uniform(np.log(d.low), np.log(d.high))))
            else:
                point[name] = float(rng.uniform(d.low, d.high))
        points.append(point)
    return points


def trials_frame(points, accuracy, *, model="planted", dataset="mnist", sampler="random"):
    frame = pd.DataFrame({f"param_{k}": [p[k] for p in points] for k in points[0]})
    frame["accuracy"] = np.asarray(accuracy, dtype=float)
    frame["value"] = frame["accuracy"]
    frame["dataset"], frame["model"], frame["sampler"] = dataset, model, sampler
    frame["state"], frame["invalid"], frame["chance"] = "COMPLETE", False, 0.1
    frame["number"] = np.arange(len(frame))
    return frame


def planted_trials(n=60, seed=0, noise=0.01, **kwargs):
    rng = np.random.default_rng(seed)
    points = sample_points(n, rng)
    accuracy = planted_accuracy(points) + rng.normal(0, noise, n)
    return trials_frame(points, accuracy, **kwargs), points


def accuracy_rows(values, *, model, dataset="mnist", sampler="random", **extra):
    """trials rows with only the accuracy given (no parameters)."""
    values = np.asarray(values, dtype=float)
    return pd.DataFrame({"dataset": dataset, "model": model, "sampler": sampler, "state": "COMPLETE",
                         "invalid": False, "chance": 0.1, "accuracy": values, "value": values,
                         "number": np.arange(len(values)), **extra})
