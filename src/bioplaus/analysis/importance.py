"""Hyperparameter importance from the random-sampler trials (fANOVA, PED-ANOVA, interactions).

Owns :func:`importance` and :func:`interactions`, for the random trials of
each (dataset, model). Two evaluators:

* ``fanova``: the main-effect variance fraction of each parameter in our
  random-forest functional ANOVA (Hutter, Hoos & Leyton-Brown 2014, ICML;
  estimator in :mod:`bioplaus.analysis.surrogate`). Ours rather than optuna's
  ``FanovaImportanceEvaluator``: optuna's reports main effects only (no pairwise
  interactions), cannot restrict a parameter to the trials where it is active,
  and is too slow to bootstrap (about a second per parameter group).
* ``ped_anova``: optuna's ``PedAnovaImportanceEvaluator`` (Watanabe, Bansal &
  Hutter 2023, IJCAI, "PED-ANOVA: efficiently quantifying hyperparameter
  importance in arbitrary subspaces"): importance of reaching the best 10% of
  the trials.

Conditional importance: a parameter is scored only on the trials where it is
active (:mod:`bioplaus.analysis.active`). For ``fanova`` the marginal of *j* is
averaged over the trials where *j* is active, so ``raw`` is the fraction of the
accuracy variance among those trials explained by *j* alone. For ``ped_anova``
the parameters active in the same trials form one group, scored in the study of
those trials (covariates: the parameters active in all of them). ``importance``
normalises ``raw`` to sum to 1 over the parameters of one (dataset, model,
evaluator). The pairwise interactions (:func:`interactions`) are the variance
fractions of the pure two-way components of the same forest.

Uncertainty: a percentile bootstrap over trials (Efron & Tibshirani 1993, "An
introduction to the bootstrap", ch. 13): ``n_boot`` resamples of the valid
trials with replacement, each scored as above (forest refitted);
``lo``/``hi`` are the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of
the replicates of ``importance`` (for interactions: of ``fraction``). A
resample repeats trials, which a forest fits more closely, so the replicates
of a dominant parameter's share sit a little below the estimate; the interval
can then end just below it (seen on small samples). It is reported as is.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import numpy as np
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from bioplaus.analysis.active import REGISTRY, active_matrix, resolve_inactive, trial_points
from bioplaus.analysis.loading import _prepare
from bioplaus.analysis.statistics import _ci, valid_mask

#: fewest valid random-sampler trials :func:`importance` accepts per (dataset, model).
MIN_IMPORTANCE_TRIALS = 10
#: fewest trials in which a parameter must be active to be scored (else NaN)
MIN_ACTIVE_TRIALS = 8
#: bootstrap resamples of :func:`importance` by default (the CLI's ``--n-boot``)
IMPORTANCE_BOOTSTRAP = 50
#: evaluator labels in the ``evaluator`` column
EVALUATORS = ("fanova", "ped_anova")
#: PED-ANOVA's top quantile (importance of reaching the best 10% of the trials)
PED_TARGET_QUANTILE = 0.1
#: PED-ANOVA scores a group of parameters only when its top quantile holds this many trials
PED_MIN_TOP = 2
IMPORTANCE_COLUMNS = ["dataset", "model", "param", "evaluator", "importance", "lo", "hi", "raw",
                      "n_trials", "n_active"]
INTERACTION_COLUMNS = ["dataset", "model", "param_1", "param_2", "fraction", "lo", "hi",
                       "main_1", "main_2", "n_active", "n_trials"]


def _param_value(value: Any, distribution: BaseDistribution, name: str):
    """A CSV cell converted to a point of ``distribution`` (ValueError when outside it)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"parameter {name!r} has a missing value")
    if isinstance(distribution, CategoricalDistribution):
        for choice in distribution.choices:
            if value == choice or str(value).strip().lower() == str(choice).strip().lower():
                return choice
        raise ValueError(f"parameter {name!r}: {value!r} is not one of {distribution.choices}")
    if isinstance(distribution, IntDistribution):
        number = int(round(float(value)))
    elif isinstance(distribution, FloatDistribution):
        number = float(value)
    else:
        raise ValueError(f"parameter {name!r}: unsupported distribution {distribution!r}")
    if not distribution._contains(distribution.to_internal_repr(number)):
        raise ValueError(
            f"parameter {name!r}: {number!r} lies outside [{distribution.low}, {distribution.high}]"
        )
    return number


def _space_for(space, model: str) -> Mapping[str, BaseDistribution]:
    if all(isinstance(v, BaseDistribution) for v in space.values()):
        return space
    if model not in space:
        raise ValueError(f"no search space given for model {model!r}")
    return space[model]




def _check_random(frame: pd.DataFrame, what: str) -> None:
    samplers = sorted(set(frame["sampler"].astype(str)) - {"random"})
    if samplers:
        raise ValueError(
            f"{what} needs the uniformly random sample of the search space "
            f"(sampler 'random'); got trials of sampler(s) {samplers}: "
            "optimiser-guided trials are concentrated where accuracy is high and bias importances"
        )


def _groups(frame: pd.DataFrame, space, model: str, dataset: str, min_trials: int, what: str):
    """Valid rows of one (dataset, model) as optuna points, accuracy and the activity matrix."""
    if len(frame) < min_trials:
        raise ValueError(f"{what} for {model} on {dataset}: {len(frame)} valid random trials, "
                         f"need at least {min_trials}")
    missing = [n for n in space if f"param_{n}" not in frame.columns]
    if missing:
        raise ValueError(f"trials of {model} on {dataset} lack column(s) "
                         + ", ".join(f"param_{n}" for n in missing))
    points = []
    for row in trial_points(frame, space):
        # values outside the space are an error here (a trial is a sample of it)
        points.append({n: (_param_value(v, space[n], n) if v is not None else None)
                       for n, v in row.items()})
    return points


def _score(points, accuracy, active, space, names, rule, parents, seed, min_active):
    """raw scores {evaluator: {name: score}} of one sample (conditional, see module docstring)."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    from bioplaus.analysis.surrogate import Surrogate

    raw = {label: {n: np.nan for n in names} for label in EVALUATORS}
    columns = {n: i for i, n in enumerate(space)}
    counts = {n: int(active[:, columns[n]].sum()) for n in names}
    if np.ptp(accuracy) == 0:
        for label in EVALUATORS:
            raw[label].update({n: 0.0 for n in names if counts[n] >= min_active})
        return raw
    surrogate = Surrogate.fit(points, accuracy, space, rule, seed=seed, parents=parents)
    scored = [n for n in names if counts[n] >= min_active]
    for name, effect in surrogate.main_effects(scored).items():
        raw["fanova"][name] = effect["fraction"]
    patterns: dict[bytes, list[str]] = {}
    for name in names:
        patterns.setdefault(active[:, columns[name]].tobytes(), []).append(name)
    for members in patterns.values():
        rows = np.flatnonzero(active[:, columns[members[0]]])
        if len(rows) < max(min_active, int(np.ceil(PED_MIN_TOP / PED_TARGET_QUANTILE))):
            continue
        if np.ptp(accuracy[rows]) == 0:
            raw["ped_anova"].update({n: 0.0 for n in members})
            continue
        # covariates: every varying parameter active in all of these trials
        shared = [n for n in space if not space[n].single() and active[rows, columns[n]].all()]
        distributions = {n: space[n] for n in shared}
        study = optuna.create_study(direction="maximize")
        study.add_trials([
            optuna.trial.create_trial(params={n: points[r][n] for n in shared},
                                      distributions=distributions, value=float(accuracy[r]))
            for r in rows
        ])
        evaluator = PedAnovaImportanceEvaluator(target_quantile=PED_TARGET_QUANTILE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = get_param_importances(study, evaluator=evaluator, params=members, normalize=False)
        raw["ped_anova"].update({n: float(scores.get(n, 0.0)) for n in members})
    return raw


def _normalised(raw: Mapping[str, float]) -> dict[str, float]:
    values = np.array([v for v in raw.values() if np.isfinite(v)])
    total = values.sum() if len(values) else 0.0
    return {n: (v / total if total > 0 else (0.0 if np.isfinite(v) else np.nan)) for n, v in raw.items()}


def importance(
    trials_random: pd.DataFrame,
    space: Mapping[str, BaseDistribution] | Mapping[str, Mapping[str, BaseDistribution]],
    *,
    seed: int = 0,
    min_trials: int = MIN_IMPORTANCE_TRIALS,
    inactive: Any = REGISTRY,
    n_boot: int = 0,
    level: float = 0.95,
    min_active: int = MIN_ACTIVE_TRIALS,
) -> pd.DataFrame:
    """Conditional hyperparameter importance of each (dataset, model), with bootstrap intervals.

    Only trials of the ``random`` sampler are accepted: they are a uniform
    sample of the search space, whereas GP/TPE trials cluster where the
    optimiser found high accuracy, which biases any importance estimate.
    Rows of any other sampler raise ``ValueError``; so does a (dataset, model)
    with fewer than ``min_trials`` valid trials. Invalid/failed trials are
    excluded; accuracy is the objective (maximised).

    Parameters
    ----------
    trials_random : DataFrame
        trials.csv rows of the random sampler (``param_<name>`` columns).
    space : mapping
        The model's search space (``{name: optuna distribution}``, as
        ``get_model(model).search_space(options)``) or ``{model: space}``.
        Single-valued distributions are left out (they cannot matter).
    seed : int, default 0
        Seed of the fANOVA forests and of the bootstrap resampling.
    min_trials : int, default MIN_IMPORTANCE_TRIALS (10)
    inactive : "registry", None or callable, default "registry"
        Which parameters a trial leaves inactive (:mod:`bioplaus.analysis.active`).
    n_boot : int, default 0
        Bootstrap resamples (0: no intervals, ``lo``/``hi`` NaN).
    level : float, default 0.95
        Coverage of the percentile interval.
    min_active : int, default MIN_ACTIVE_TRIALS (8)
        A parameter active in fewer trials gets NaN.

    Returns
    -------
    DataFrame with columns :data:`IMPORTANCE_COLUMNS`: ``evaluator`` is
    ``fanova`` (our random-forest functional ANOVA, forest seeded with ``seed``)
    or ``ped_anova`` (``PedAnovaImportanceEvaluator(target_quantile=0.1)``:
    importance of reaching the top 10% of accuracies; needs 20 active trials);
    ``raw`` the evaluator's score on the trials where the parameter is active, ``importance`` the normalised score (sums to 1 per
    evaluator; all 0 when accuracy does not vary), ``lo``/``hi`` its bootstrap
    interval, ``n_active`` the trials where it is active out of ``n_trials``.
    Sorted by evaluator, then importance descending.
    """
    from bioplaus.analysis.surrogate import Encoder, find_parents

    if len(trials_random) == 0:
        raise ValueError("importance: no trials given")
    frame = _prepare(trials_random)
    _check_random(frame, "importance")
    frame = frame[valid_mask(frame)]
    rng = np.random.default_rng(seed)
    rows = []
    for (dataset, model), group in frame.groupby(["dataset", "model"], sort=True):
        model_space = dict(_space_for(space, model))
        points = _groups(group, model_space, model, dataset, min_trials, "importance")
        names = [n for n, d in model_space.items() if not d.single()]
        if not names:
            raise ValueError(f"importance for {model} on {dataset}: no parameter of the space varies")
        active = active_matrix(group, model_space, inactive=inactive).to_numpy()
        accuracy = group["accuracy"].to_numpy(dtype=np.float64)
        rule = resolve_inactive(model, inactive)
        parents = find_parents(points, model_space, Encoder(model_space, rule))
        settings = dict(space=model_space, names=names, rule=rule, parents=parents, seed=seed,
                        min_active=min_active)
        raw = _score(points, accuracy, active, **settings)
        replicates = {label: {n: [] for n in names} for label in EVALUATORS}
        for _ in range(n_boot):
            index = rng.integers(0, len(points), len(points))
            scores = _score([points[i] for i in index], accuracy[index], active[index], **settings)
            for label in EVALUATORS:
                for name, value in _normalised(scores[label]).items():
                    replicates[label][name].append(value)
        columns = {n: i for i, n in enumerate(model_space)}
        for label in EVALUATORS:
            normalised = _normalised(raw[label])
            for name in names:
                # a parameter not scored on the sample gets no interval (a resample that
                # repeats its few active trials would pass the threshold without new information)
                low, high = (_ci(np.array(replicates[label][name]), level)
                             if n_boot and np.isfinite(raw[label][name]) else (np.nan, np.nan))
                rows.append({"dataset": dataset, "model": model, "param": name, "evaluator": label,
                             "importance": normalised[name], "lo": low, "hi": high,
                             "raw": raw[label][name], "n_trials": len(points),
                             "n_active": int(active[:, columns[name]].sum())})
    table = pd.DataFrame(rows, columns=IMPORTANCE_COLUMNS)
    return table.sort_values(
        ["dataset", "model", "evaluator", "importance"], ascending=[True, True, True, False],
        ignore_index=True, na_position="last",
    )


def interactions(
    trials_random: pd.DataFrame,
    space: Mapping[str, BaseDistribution] | Mapping[str, Mapping[str, BaseDistribution]],
    *,
    seed: int = 0,
    inactive: Any = REGISTRY,
    top: int = 10,
    candidates: int = 10,
    n_boot: int = 0,
    level: float = 0.95,
    min_trials: int = MIN_IMPORTANCE_TRIALS,
    min_active: int = MIN_ACTIVE_TRIALS,
) -> pd.DataFrame:
    """The largest pairwise interactions of each (dataset, model), from our random-forest fANOVA.

    A :class:`~bioplaus.analysis.surrogate.Surrogate` is fitted on the valid
    random trials; the ``candidates`` parameters with the largest main-effect
    fractions (``main_1``/``main_2``) are paired, each pair's pure-interaction
    variance fraction (``fraction``, see :mod:`bioplaus.analysis.surrogate`) is
    estimated on the trials where both are active (``n_active``; pairs with
    fewer than ``min_active`` get none) and the ``top`` largest are kept.
    ``n_boot`` resamples of the trials (forest refitted on each) give
    ``lo``/``hi`` for those. Columns :data:`INTERACTION_COLUMNS`, sorted by
    ``fraction`` descending within each (dataset, model).
    """
    from bioplaus.analysis.surrogate import Surrogate

    if len(trials_random) == 0:
        raise ValueError("interactions: no trials given")
    frame = _prepare(trials_random)
    _check_random(frame, "interactions")
    frame = frame[valid_mask(frame)]
    rng = np.random.default_rng(seed)
    rows = []
    for (dataset, model), group in frame.groupby(["dataset", "model"], sort=True):
        model_space = {n: d for n, d in _space_for(space, model).items()}
        points = _groups(group, model_space, model, dataset, min_trials, "interactions")
        rule = resolve_inactive(model, inactive)
        accuracy = group["accuracy"].to_numpy(dtype=np.float64)
        surrogate = Surrogate.fit(points, accuracy, model_space, rule, seed=seed)
        names = [n for n, d in model_space.items() if not d.single()]
        main = {n: e["fraction"] for n, e in surrogate.main_effects(names).items()}
        ranked = sorted((n for n in names if np.isfinite(main[n])), key=lambda n: -main[n])
        chosen = ranked[:candidates]
        pairs = []
        for i, first in enumerate(chosen):
            for second in chosen[i + 1:]:
                effect = surrogate.pair_effect(first, second)
                if effect["n_active"] >= min_active and np.isfinite(effect["fraction"]):
                    pairs.append((first, second, effect["fraction"], effect["n_active"]))
        pairs.sort(key=lambda p: -p[2])
        pairs = pairs[:top]
        replicates = np.full((n_boot, len(pairs)), np.nan)
        for b in range(n_boot):
            index = rng.integers(0, len(points), len(points))
            refit = Surrogate.fit([points[i] for i in index], accuracy[index], model_space, rule,
                                  seed=seed, parents=surrogate.parents_)
            for k, (first, second, _, _) in enumerate(pairs):
                replicates[b, k] = refit.pair_effect(first, second)["fraction"]
        for k, (first, second, fraction, count) in enumerate(pairs):
            low, high = _ci(replicates[:, k], level) if n_boot else (np.nan, np.nan)
            rows.append({"dataset": dataset, "model": model, "param_1": first, "param_2": second,
                         "fraction": fraction, "lo": low, "hi": high, "main_1": main[first],
                         "main_2": main[second], "n_active": count, "n_trials": len(points)})
    return pd.DataFrame(rows, columns=INTERACTION_COLUMNS)
