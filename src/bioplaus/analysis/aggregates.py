"""Aggregates over datasets with interval estimates: IQM and probability of improvement.

Owns :func:`iqm`, :func:`iqm_table`, :func:`probability_of_improvement` and
:func:`improvement_table`, after Agarwal, Schwarzer, Castro, Courville &
Bellemare 2021, "Deep reinforcement learning at the edge of the statistical
precipice", NeurIPS:

* **IQM** (interquartile mean, their Sec. 4.3): the mean of the middle 50% of
  the scores, here ``scipy.stats.trim_mean(x, 0.25)`` (``floor(n / 4)``
  values cut from each end), over the uniformly random configurations of a
  model: pooled over datasets (``dataset == "all"``) and per dataset.
* **probability of improvement** (their Sec. 4.4): ``P(X_a > X_b)`` for ``X_a``,
  ``X_b`` the accuracies of a random configuration of models *a* and *b* on the
  same dataset, ties counting 1/2 (the Mann-Whitney U / (n_a n_b)), averaged
  over the datasets both models were run on.
* **stratified bootstrap** (their Sec. 4.1, Appendix A): each replicate
  resamples, with replacement, the configurations of every (dataset, model)
  separately (strata = datasets; their sizes kept), and recomputes the
  statistic; the interval is the percentile interval of ``n_boot`` replicates.

Accuracies are fractions; both use the ``random`` sampler's valid trials.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import trim_mean

from bioplaus.analysis.loading import _prepare
from bioplaus.analysis.statistics import _ci, valid_mask

IQM_COLUMNS = ["dataset", "model", "iqm", "lo", "hi", "n", "n_datasets"]
IMPROVEMENT_COLUMNS = ["model_a", "model_b", "probability", "lo", "hi", "n_datasets"]
#: bootstrap replicates of the aggregates by default
AGGREGATE_BOOTSTRAP = 2000
#: share cut from each end for the interquartile mean
IQM_CUT = 0.25


def iqm(values, axis=-1) -> np.ndarray:
    """Interquartile mean along ``axis`` (``trim_mean(values, 0.25)``)."""
    return trim_mean(np.asarray(values, dtype=float), IQM_CUT, axis=axis)


def _strata(trials: pd.DataFrame, sampler: str) -> dict[tuple[str, str], np.ndarray]:
    frame = _prepare(trials)
    frame = frame[valid_mask(frame) & (frame["sampler"] == sampler) & (frame["source"] == "ours")]
    return {key: g["accuracy"].to_numpy(dtype=float)
            for key, g in frame.groupby(["dataset", "model"], sort=True)}


def stratified_iqm(strata: list[np.ndarray], n_boot: int, rng) -> tuple[float, np.ndarray]:
    """IQM of the pooled strata and ``n_boot`` stratified-bootstrap replicates of it."""
    pooled = np.concatenate(strata)
    replicates = np.concatenate(
        [s[rng.integers(0, len(s), size=(n_boot, len(s)))] for s in strata], axis=1
    ) if n_boot else np.empty((0, len(pooled)))
    return float(iqm(pooled)), (iqm(replicates, axis=1) if n_boot else np.array([]))


def iqm_table(trials: pd.DataFrame, *, sampler: str = "random", n_boot: int = AGGREGATE_BOOTSTRAP,
              level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per model: IQM of accuracy over random configurations, pooled (``"all"``) and per dataset.

    Columns :data:`IQM_COLUMNS`; ``lo``/``hi`` from the stratified bootstrap
    (a single stratum for a per-dataset row).
    """
    strata = _strata(trials, sampler)
    rng = np.random.default_rng(seed)
    rows = []
    models = sorted({m for _, m in strata})
    for model in models:
        keys = [k for k in strata if k[1] == model]
        scopes = [("all", keys)] + [(k[0], [k]) for k in keys]
        for scope, members in scopes:
            estimate, replicates = stratified_iqm([strata[k] for k in members], n_boot, rng)
            low, high = _ci(replicates, level) if n_boot else (np.nan, np.nan)
            rows.append({"dataset": scope, "model": model, "iqm": estimate, "lo": low, "hi": high,
                         "n": int(sum(len(strata[k]) for k in members)), "n_datasets": len(members)})
    return pd.DataFrame(rows, columns=IQM_COLUMNS)


def probability_of_improvement(first, second) -> float:
    """``P(X > Y) + P(X = Y) / 2`` over all pairs of ``first`` and ``second`` values."""
    x = np.asarray(first, dtype=float)[..., :, None]
    y = np.asarray(second, dtype=float)[..., None, :]
    return (np.mean((x > y) + 0.5 * (x == y), axis=(-2, -1)))


def _improvement_replicates(x: np.ndarray, y: np.ndarray, n_boot: int, rng, chunk: int = 200) -> np.ndarray:
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        xs = x[rng.integers(0, len(x), size=(size, len(x)))]
        ys = y[rng.integers(0, len(y), size=(size, len(y)))]
        out[start:start + size] = probability_of_improvement(xs, ys)
    return out


def improvement_table(trials: pd.DataFrame, *, sampler: str = "random",
                      n_boot: int = AGGREGATE_BOOTSTRAP, level: float = 0.95,
                      seed: int = 0) -> pd.DataFrame:
    """``P(X_a > X_b)`` for every ordered pair of models, averaged over their shared datasets.

    Columns :data:`IMPROVEMENT_COLUMNS`; ``lo``/``hi`` from the stratified
    bootstrap (each dataset's configurations of each model resampled).
    """
    strata = _strata(trials, sampler)
    rng = np.random.default_rng(seed)
    models = sorted({m for _, m in strata})
    rows = []
    for a in models:
        for b in models:
            if a == b:
                continue
            datasets = sorted({d for d, m in strata if m == a} & {d for d, m in strata if m == b})
            if not datasets:
                continue
            estimate = float(np.mean([probability_of_improvement(strata[(d, a)], strata[(d, b)])
                                      for d in datasets]))
            if n_boot:
                replicates = np.mean([_improvement_replicates(strata[(d, a)], strata[(d, b)], n_boot, rng)
                                      for d in datasets], axis=0)
                low, high = _ci(replicates, level)
            else:
                low = high = np.nan
            rows.append({"model_a": a, "model_b": b, "probability": estimate, "lo": low, "hi": high,
                         "n_datasets": len(datasets)})
    return pd.DataFrame(rows, columns=IMPROVEMENT_COLUMNS)
