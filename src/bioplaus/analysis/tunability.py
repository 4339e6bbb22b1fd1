"""Tunability: what tuning buys over the default, the risk of an untuned draw, and per parameter.

Owns :func:`tunability` (one row per dataset and model) and
:func:`tunability_shares` (one row per dataset, model and hyperparameter).

Definitions (Probst, Boulesteix & Bischl 2019, "Tunability: importance of
hyperparameters of machine learning algorithms", JMLR 20(53), Sec. 2):

* **default accuracy** ``R(default)``: the mean accuracy of the model's
  published default (``ModelSpec.default_params``) refitted with new seeds
  (``repeats.csv``, ``source == "default"``), with its seed-to-seed standard
  deviation ``default_sd`` (ddof=1) and ``n_default`` refits.
* **best** ``R(best)``: the best valid accuracy any sampler found (trials of all
  samplers, ``source == "ours"``); ``best_refit`` is the mean refitted accuracy of
  the best configurations (``repeats.csv`` sources ``best_*``, the best of them),
  free of the winner's curse of taking a maximum over noisy trials.
* **tunability** ``d = R(best) - R(default)`` (Probst et al. eq. 2, the
  improvement of the tuned over the default setting), and ``d_refit =
  best_refit - R(default)``.
* **tuning risk** (our definition, the same comparison made for an untuned
  draw): with ``X`` the accuracy of a uniformly random configuration (the
  ``random`` sampler's valid trials, ``n_random`` of them),
  ``risk_probability = P(X < R(default))`` (the fraction of random trials below
  the default's mean), ``risk_shortfall = E[max(0, R(default) - X)]`` (the mean
  shortfall, in accuracy, over all random draws) and ``risk_conditional =
  E[R(default) - X | X < R(default)]`` (how far below, when below).

Per hyperparameter *j* (Probst et al. eq. 3-4: the tunability of *j* is the
gain of tuning *j* alone, the others kept at the default), estimated from the
random-forest surrogate of :mod:`bioplaus.analysis.surrogate` fitted on the
random trials (no new runs):

* ``d_j = max_v f(default with x_j = v) - f(default)`` over the grid of *j*'s
  active trial values (:func:`bioplaus.analysis.surrogate.grid`; activity
  re-derived at each point, so raising ``num_layers`` of the default brings in
  the default's widths); ``share = d_j / d`` (NaN when ``d`` is not positive:
  nothing to recover, or no measured default). A parameter inactive at the default
  and not changing any other's activity gets ``d_j = 0``: tuning it alone does
  nothing.
* ``share_marginal = (max_v a_j(v) - f(default)) / d``, with ``a_j`` the
  fANOVA marginal of *j* (the others averaged over the trials where *j* is
  active, not held at the default): what tuning *j* buys when the other
  parameters are drawn at random. It credits every parameter with
  ``E[f] - f(default)`` (positive when the default is worse than an average
  draw), so it reads as an upper bound, not a share.

The numerator of ``share`` is the surrogate's, its denominator measured, so a
surrogate that predicts the default poorly (few trials near it) can give shares
above 1 or below 0; ``d_surrogate = max over the trials of f - f(default)`` (the
surrogate's own *d*) is reported beside it for that check.

``f`` is the surrogate; ``default_in_space`` says whether the default lies
inside the searched ranges (the segregated-dendrite default does not: its
2-step test phase and zero apical conductance are outside them, and the forest
then predicts as at the nearest boundary).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution

from bioplaus.analysis.active import REGISTRY, point_value, resolve_inactive, trial_points
from bioplaus.analysis.loading import _prepare
from bioplaus.analysis.statistics import valid_mask

TUNABILITY_COLUMNS = [
    "dataset", "model", "default", "default_sd", "n_default", "best", "best_refit", "d", "d_refit",
    "risk_probability", "risk_shortfall", "risk_conditional", "n_random", "default_in_space",
]
SHARE_COLUMNS = ["dataset", "model", "param", "d_param", "share", "share_marginal", "d_surrogate", "best_value",
                 "default_value", "active_at_default", "n_active", "n_random"]
#: fewest valid random trials for the per-parameter shares (the surrogate needs a sample)
MIN_SURROGATE_TRIALS = 10


def _default_accuracy(repeats: pd.DataFrame | None, dataset: str, model: str):
    if repeats is None or len(repeats) == 0:
        return np.nan, np.nan, 0, np.nan
    frame = _prepare(repeats)
    frame = frame[valid_mask(frame) & (frame["dataset"] == dataset) & (frame["model"] == model)]
    default = frame.loc[frame["source"] == "default", "accuracy"].to_numpy(dtype=float)
    best_means = [g["accuracy"].mean() for s, g in frame.groupby("source") if str(s).startswith("best")]
    mean = float(default.mean()) if len(default) else np.nan
    sd = float(default.std(ddof=1)) if len(default) > 1 else np.nan
    return mean, sd, len(default), (float(max(best_means)) if best_means else np.nan)


def tuning_risk(random_accuracy, default: float) -> dict[str, float]:
    """``risk_probability``, ``risk_shortfall``, ``risk_conditional`` (module definitions)."""
    x = np.asarray(random_accuracy, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x) or not np.isfinite(default):
        return {"risk_probability": np.nan, "risk_shortfall": np.nan, "risk_conditional": np.nan}
    below = x < default
    gap = default - x
    return {"risk_probability": float(below.mean()),
            "risk_shortfall": float(np.maximum(gap, 0.0).mean()),
            "risk_conditional": float(gap[below].mean()) if below.any() else 0.0}


def _in_space(point: Mapping[str, Any], space: Mapping[str, BaseDistribution]) -> bool:
    for name, distribution in space.items():
        value = point.get(name)
        if value is None:
            return False
        if isinstance(distribution, CategoricalDistribution):
            if value not in distribution.choices:
                return False
        elif not distribution.low <= value <= distribution.high:
            return False
    return True


def _model_setup(model: str, specs: Mapping[str, Any] | None, options: Mapping[str, Any] | None):
    from bioplaus.models import get_model

    spec = (specs or {}).get(model) or get_model(model)
    space = spec.search_space((options or {}).get(model) or {})
    return spec, dict(space)


def tunability(
    trials: pd.DataFrame,
    repeats: pd.DataFrame | None,
    *,
    specs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    sampler: str = "random",
) -> pd.DataFrame:
    """One row per (dataset, model) of :data:`TUNABILITY_COLUMNS` (module definitions).

    ``trials``: trial rows of every sampler (``best`` is taken over all; the
    risk over ``sampler``'s); ``repeats``: repeats.csv rows (NaN default columns
    without them). ``specs``/``options`` are only used to tell whether the
    default lies in the space (``{model: ModelSpec}`` overriding the registry,
    ``{model: model_options}``); a model the registry does not know gets NaN.
    """
    frame = _prepare(trials)
    frame = frame[valid_mask(frame) & (frame["source"] == "ours")]
    rows = []
    for (dataset, model), group in frame.groupby(["dataset", "model"], sort=True):
        default, sd, n_default, best_refit = _default_accuracy(repeats, dataset, model)
        random = group.loc[group["sampler"] == sampler, "accuracy"].to_numpy(dtype=float)
        best = float(group["accuracy"].max())
        try:
            spec, space = _model_setup(model, specs, options)
            in_space = _in_space(dict(spec.default_params), space)
        except Exception:  # noqa: BLE001 - unknown model: the flag is simply not known
            in_space = np.nan
        rows.append({"dataset": dataset, "model": model, "default": default, "default_sd": sd,
                     "n_default": n_default, "best": best, "best_refit": best_refit,
                     "d": best - default, "d_refit": best_refit - default,
                     **tuning_risk(random, default), "n_random": len(random),
                     "default_in_space": in_space})
    return pd.DataFrame(rows, columns=TUNABILITY_COLUMNS)


def tunability_shares(
    trials: pd.DataFrame,
    repeats: pd.DataFrame | None,
    *,
    specs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    inactive: Any = REGISTRY,
    seed: int = 0,
    sampler: str = "random",
    min_trials: int = MIN_SURROGATE_TRIALS,
) -> pd.DataFrame:
    """One row per (dataset, model, hyperparameter) of :data:`SHARE_COLUMNS` (module definitions).

    The surrogate is fitted on ``sampler``'s valid trials (random forest with
    ``random_state=seed``); ``d`` comes from :func:`tunability` (so ``share`` is
    NaN without repeats.csv: no measured default). ``d_param`` is in accuracy
    units; ``best_value`` is the value of *j* that maximises the surrogate with
    the others at the default; ``n_active`` counts the random trials where *j*
    is active. (Dataset, model) pairs with fewer than ``min_trials`` random
    trials are skipped.
    """
    from bioplaus.analysis.surrogate import Surrogate, grid

    table = tunability(trials, repeats, specs=specs, options=options, sampler=sampler)
    d_of = {(r.dataset, r.model): r.d for r in table.itertuples()}
    frame = _prepare(trials)
    frame = frame[valid_mask(frame) & (frame["source"] == "ours") & (frame["sampler"] == sampler)]
    rows = []
    for (dataset, model), group in frame.groupby(["dataset", "model"], sort=True):
        if len(group) < min_trials:
            continue
        spec, space = _model_setup(model, specs, options)
        rule = spec.inactive if inactive == REGISTRY else resolve_inactive(model, inactive)
        missing = [n for n in space if n not in spec.default_params]
        if missing:
            raise ValueError(f"{model}: the default lacks parameter(s) {', '.join(missing)}")
        default = {n: point_value(spec.default_params[n], space[n]) for n in space}
        points = trial_points(group, space)
        accuracy = group["accuracy"].to_numpy(dtype=float)
        surrogate = Surrogate.fit(points, accuracy, space, rule, seed=seed)
        at_default = float(surrogate.predict_points([default])[0])
        d_surrogate = float(surrogate.forest_.predict(surrogate.encoder.encode(points)).max()) - at_default
        default_active = surrogate.encoder.active(default)
        d = d_of.get((dataset, model), np.nan)
        for name, distribution in space.items():
            if distribution.single():
                continue
            column = surrogate.encoder.names.index(name)
            count = int(surrogate.active_[:, column].sum())
            values, _ = grid([points[r][name] for r in np.flatnonzero(surrogate.active_[:, column])],
                             distribution)
            if values:
                predictions = surrogate.predict_points([{**default, name: v} for v in values])
                best_index = int(np.argmax(predictions))
                gain, best_value = float(predictions[best_index]) - at_default, values[best_index]
            else:
                gain, best_value = np.nan, None
            marginal = surrogate.main_effect(name)["marginal"] if count >= 2 else np.array([])
            marginal_gain = float(marginal.max()) - at_default if len(marginal) else np.nan
            rows.append({"dataset": dataset, "model": model, "param": name, "d_param": gain,
                         "share": gain / d if np.isfinite(d) and d > 0 else np.nan,
                         "share_marginal": marginal_gain / d if np.isfinite(d) and d > 0 else np.nan,
                         "d_surrogate": d_surrogate,
                         "best_value": best_value, "default_value": default[name],
                         "active_at_default": name in default_active, "n_active": count,
                         "n_random": len(points)})
    return pd.DataFrame(rows, columns=SHARE_COLUMNS)
