"""Which hyperparameters of each trial had an effect (conditional search spaces).

Owns the activity table: for every trial row and every searched parameter, whether
the parameter changed the model built from that point. The search spaces have a
fixed set of names (the Gaussian-process sampler needs one), so every trial draws
``h_l_5`` even when ``num_layers`` is 2, ``b_etas`` even without feedback learning,
and so on; the model spec says which of them were ignored
(:meth:`bioplaus.models.ModelSpec.active_params`). Every per-parameter statistic
of the package (importance, interactions, tunability shares, sensitivity panels)
uses, for each parameter, only the trials where it is active, and reports how
many those are (``n_active``).

``inactive`` arguments throughout the package take :data:`REGISTRY` (the default:
the model registry's ``ModelSpec.inactive`` of each row's model; a model the
registry does not know has every parameter active), ``None`` (every parameter
active) or a callable ``inactive(params) -> names``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from bioplaus.errors import ConfigError

#: ``inactive=REGISTRY``: ask the model registry which parameters a point leaves inactive.
REGISTRY = "registry"

InactiveFn = Callable[[Mapping[str, Any]], Iterable[str]]


def resolve_inactive(model: str, inactive: Any = REGISTRY) -> InactiveFn | None:
    """The ``inactive(params) -> names`` function to use for ``model`` (None: all active)."""
    if inactive is None or callable(inactive):
        return inactive
    if inactive != REGISTRY:
        raise ValueError(f"inactive must be {REGISTRY!r}, None or a callable, got {inactive!r}")
    from bioplaus.models import get_model

    try:
        return get_model(model).inactive
    except ConfigError:  # a model only in the 2019 logs, or a synthetic one: all parameters act
        return None


def point_value(value: Any, distribution: BaseDistribution) -> Any:
    """A CSV cell as a value of ``distribution`` (no range check; None when missing).

    Categorical cells match a choice by equality or by their text (CSV ``"True"``
    matches ``True``); integer cells are rounded; float cells are floats.
    """
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(distribution, CategoricalDistribution):
        for choice in distribution.choices:
            if value == choice or str(value).strip().lower() == str(choice).strip().lower():
                return choice
        raise ValueError(f"{value!r} is not one of {distribution.choices}")
    if isinstance(distribution, IntDistribution):
        return int(round(float(value)))
    return float(value)


def trial_points(frame: pd.DataFrame, space: Mapping[str, BaseDistribution]) -> list[dict[str, Any]]:
    """One ``{name: value}`` dict per row from its ``param_<name>`` columns (missing cells: None)."""
    missing = [n for n in space if f"param_{n}" not in frame.columns]
    if missing:
        raise ValueError("trials lack column(s) " + ", ".join(f"param_{n}" for n in missing))
    points = []
    for values in frame[[f"param_{n}" for n in space]].itertuples(index=False):
        point = {}
        for name, value in zip(space, values):
            try:
                point[name] = point_value(value, space[name])
            except ValueError as exc:
                raise ValueError(f"parameter {name!r}: {exc}") from None
        points.append(point)
    return points


def active_set(point: Mapping[str, Any], inactive: InactiveFn | None, *, model: str = "") -> set[str]:
    """Names of ``point`` that affect the model (all but ``inactive(point)``; missing values never)."""
    names = {n for n, v in point.items() if v is not None}
    if inactive is None:
        return names
    try:
        return names - set(inactive(point))
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"cannot tell which parameters of {model or 'the model'} are active: the trials "
            f"lack or leave blank a parameter the model's rule reads ({exc!r}); pass "
            "inactive=None to treat every parameter as active"
        ) from None


def active_matrix(
    frame: pd.DataFrame, space: Mapping[str, BaseDistribution], *, inactive: Any = REGISTRY
) -> pd.DataFrame:
    """Boolean table (index of ``frame``, one column per name of ``space``): active in that trial.

    ``frame`` holds trial rows with ``param_<name>`` columns and a ``model``
    column (used to look up the registry's rule when ``inactive`` is
    :data:`REGISTRY`). A parameter with a blank cell is inactive (not drawn).
    """
    names = list(space)
    result = np.zeros((len(frame), len(names)), dtype=bool)
    models = frame["model"].astype(str).to_numpy() if "model" in frame.columns else np.full(len(frame), "")
    points = trial_points(frame, space)
    rules: dict[str, InactiveFn | None] = {}
    for i, (model, point) in enumerate(zip(models, points)):
        if model not in rules:
            rules[model] = resolve_inactive(model, inactive)
        active = active_set(point, rules[model], model=model)
        result[i] = [name in active for name in names]
    return pd.DataFrame(result, index=frame.index, columns=names)


def n_active(frame: pd.DataFrame, space: Mapping[str, BaseDistribution], *, inactive: Any = REGISTRY) -> pd.Series:
    """Number of rows of ``frame`` in which each parameter is active (index: parameter names)."""
    return active_matrix(frame, space, inactive=inactive).sum(axis=0).astype(int)
