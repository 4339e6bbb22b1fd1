"""Hyperparameter importance from the random-sampler trials (fANOVA, PED-ANOVA).

Owns :func:`importance`: the trials of one (dataset, model) are rebuilt as an
in-memory optuna study over the model's search space and scored by optuna's
fANOVA and PED-ANOVA evaluators. Only uniformly random trials are accepted
(optimiser-guided ones bias importances).
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

from bioplaus.analysis.loading import _prepare
from bioplaus.analysis.statistics import valid_mask

#: fewest valid random-sampler trials :func:`importance` accepts per (dataset, model).
MIN_IMPORTANCE_TRIALS = 10


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


def importance(
    trials_random: pd.DataFrame,
    space: Mapping[str, BaseDistribution] | Mapping[str, Mapping[str, BaseDistribution]],
    *,
    seed: int = 0,
    min_trials: int = MIN_IMPORTANCE_TRIALS,
) -> pd.DataFrame:
    """Hyperparameter importance of each (dataset, model) from its random-sampler trials.

    Only trials of the ``random`` sampler are accepted: they are a uniform
    sample of the search space, whereas GP/TPE trials cluster where the
    optimiser found high accuracy, which biases any importance estimate.
    Rows of any other sampler raise ``ValueError``; so does a (dataset, model)
    with fewer than ``min_trials`` valid trials. Invalid/failed trials are
    excluded; accuracy is the objective (maximised).

    ``space``: the model's search space (``{name: optuna distribution}``, as
    ``get_model(model).search_space(options)``) or ``{model: space}`` for
    frames holding several models. Each trial's ``param_<name>`` is converted to
    a point of its distribution (CSV strings ``"True"`` match choice ``True``).

    Returns columns ``dataset, model, param, evaluator, importance, n_trials``:
    ``evaluator`` is ``fanova`` (``optuna.importance.FanovaImportanceEvaluator(seed=seed)``)
    or ``ped_anova`` (``PedAnovaImportanceEvaluator()``: importance of reaching
    the top 10% of accuracies); importances are normalised to sum to 1 per
    evaluator (all 0 when accuracy does not vary). Sorted by evaluator, then
    importance descending.
    """
    import optuna
    from optuna.importance import (
        FanovaImportanceEvaluator,
        PedAnovaImportanceEvaluator,
        get_param_importances,
    )

    columns = ["dataset", "model", "param", "evaluator", "importance", "n_trials"]
    if len(trials_random) == 0:
        raise ValueError("importance: no trials given")
    frame = _prepare(trials_random)
    samplers = sorted(set(frame["sampler"].astype(str)) - {"random"})
    if samplers:
        raise ValueError(
            "importance needs the uniformly random sample of the search space "
            f"(sampler 'random'); got trials of sampler(s) {samplers}: "
            "optimiser-guided trials are concentrated where accuracy is high and bias importances"
        )
    frame = frame[valid_mask(frame)]
    rows = []
    for (dataset, model), group in frame.groupby(["dataset", "model"], sort=True):
        model_space = dict(_space_for(space, model))
        if len(group) < min_trials:
            raise ValueError(
                f"importance for {model} on {dataset}: {len(group)} valid random trials, "
                f"need at least {min_trials}"
            )
        missing = [n for n in model_space if f"param_{n}" not in group.columns]
        if missing:
            raise ValueError(f"trials of {model} on {dataset} lack column(s) "
                             + ", ".join(f"param_{n}" for n in missing))
        # optuna's logging is left as the caller set it (the CLI quiets it)
        study = optuna.create_study(direction="maximize")
        built = []
        for _, row in group.iterrows():
            params = {
                name: _param_value(row[f"param_{name}"], dist, name)
                for name, dist in model_space.items()
            }
            built.append(optuna.trial.create_trial(
                params=params, distributions=model_space, value=float(row["accuracy"])
            ))
        study.add_trials(built)
        # parameters that cannot vary (single-valued distributions) carry no information
        names = [n for n, d in model_space.items() if not d.single()]
        if not names:
            raise ValueError(f"importance for {model} on {dataset}: no parameter of the space varies")
        evaluators = {
            "fanova": FanovaImportanceEvaluator(seed=seed),
            "ped_anova": PedAnovaImportanceEvaluator(),
        }
        constant = np.ptp(group["accuracy"].to_numpy(dtype=np.float64)) == 0
        for label, evaluator in evaluators.items():
            if constant:
                scores = {n: 0.0 for n in names}
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    scores = get_param_importances(
                        study, evaluator=evaluator, params=names, normalize=True
                    )
            for name in names:
                rows.append({"dataset": dataset, "model": model, "param": name,
                             "evaluator": label, "importance": float(scores.get(name, 0.0)),
                             "n_trials": len(group)})
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(
        ["dataset", "model", "evaluator", "importance"], ascending=[True, True, True, False],
        ignore_index=True,
    )
