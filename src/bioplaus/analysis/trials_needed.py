"""Trials needed: the expected best accuracy after k uniformly random trials.

Owns :func:`expected_max` and :func:`expected_max_curves`.

Dodge, Gururangan, Card, Schwartz & Smith 2019, "Show your work: improved
reporting of experimental results", EMNLP, define the *expected validation
performance* after a budget of k trials as ``E[max(X_1, ..., X_k)]`` for ``X_i``
the accuracies of k independent random configurations. Their estimator draws
the k trials *with* replacement from the n observed ones (eq. 1: ``sum_i
v_(i) [(i/n)^k - ((i-1)/n)^k]``, ``v_(1) <= ... <= v_(n)``), which is biased
low for k close to n (it can repeat a trial). Tang, Lee, Xin, Liu, Yu & Lin
2020, "Showing your work doesn't always work", ACL, give the unbiased
estimator: the mean of ``max`` over all ``C(n, k)`` subsets of k distinct
trials (a U-statistic with kernel ``max``, hence unbiased for the population's
``E[max of k]`` when the n trials are independent draws):

    ``U_k = sum_{i=k}^{n} v_(i) C(i-1, k-1) / C(n, k)``,

because ``v_(i)`` is the maximum of exactly ``C(i-1, k-1)`` of the subsets
(ties: any order of equal values gives the same sum). :func:`expected_max`
computes it (``replacement=True``: Dodge et al.'s). The band is a percentile
bootstrap over trials (resample the n trials with replacement, recompute the
curve; Efron & Tibshirani 1993, ch. 13).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import gammaln

from bioplaus.analysis.loading import _prepare
from bioplaus.analysis.statistics import valid_mask

CURVE_COLUMNS = ["dataset", "model", "k", "expected_max", "lo", "hi", "expected_max_replacement", "n"]
#: bootstrap resamples of the band by default
CURVE_BOOTSTRAP = 1000


def _weights(n: int, k: np.ndarray) -> np.ndarray:
    """(len(k), n) weights C(i-1, k-1) / C(n, k) of the sorted values i = 1..n (0 for i < k)."""
    i = np.arange(1, n + 1)[None, :]
    k = np.asarray(k)[:, None]
    valid = i >= k
    log_w = np.where(
        valid,
        gammaln(np.maximum(i, 1)) - gammaln(np.maximum(k, 1)) - gammaln(np.maximum(i - k + 1, 1))
        - (gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)),
        -np.inf,
    )
    return np.exp(log_w)


def expected_max(values, k=None, *, replacement: bool = False) -> np.ndarray:
    """Expected maximum of k random draws from ``values`` for each k (default 1..n).

    ``replacement=False``: the unbiased U-statistic of Tang et al. 2020
    (draws without replacement; k <= n); ``True``: Dodge et al. 2019's eq. 1.
    Returns shape ``(len(k),)``. ``values`` may be ``(B, n)`` (one curve per row,
    shape ``(B, len(k))``).
    """
    values = np.sort(np.asarray(values, dtype=float), axis=-1)
    n = values.shape[-1]
    if n == 0:
        raise ValueError("expected_max: no values")
    k = np.arange(1, n + 1) if k is None else np.atleast_1d(np.asarray(k, dtype=int))
    if np.any(k < 1) or (not replacement and np.any(k > n)):
        raise ValueError(f"expected_max: k must lie in 1..{n} (got {k.min()}..{k.max()})")
    if replacement:
        i = np.arange(1, n + 1)[None, :]
        weights = (i / n) ** k[:, None] - ((i - 1) / n) ** k[:, None]
    else:
        weights = _weights(n, k)
    return values @ weights.T


def expected_max_curves(
    trials: pd.DataFrame,
    *,
    sampler: str = "random",
    n_boot: int = CURVE_BOOTSTRAP,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per (dataset, model): ``expected_max`` after k = 1..n of ``sampler``'s valid trials, with a band.

    Columns :data:`CURVE_COLUMNS`: ``expected_max`` (unbiased, Tang et al.),
    ``lo``/``hi`` the percentile bootstrap band (``n_boot`` resamples of the
    trials; ``level`` coverage), ``expected_max_replacement`` (Dodge et al.'s
    with-replacement estimate), ``n`` the valid trials.
    """
    frame = _prepare(trials)
    frame = frame[valid_mask(frame) & (frame["sampler"] == sampler) & (frame["source"] == "ours")]
    rng = np.random.default_rng(seed)
    tail = 100 * (1 - level) / 2
    rows = []
    for (dataset, model), group in frame.groupby(["dataset", "model"], sort=True):
        acc = group["accuracy"].to_numpy(dtype=float)
        n = len(acc)
        k = np.arange(1, n + 1)
        estimate = expected_max(acc, k)
        dodge = expected_max(acc, k, replacement=True)
        if n_boot:
            resamples = acc[rng.integers(0, n, size=(n_boot, n))]
            curves = expected_max(resamples, k)
            low, high = np.percentile(curves, [tail, 100 - tail], axis=0)
        else:
            low = high = np.full(n, np.nan)
        for j in range(n):
            rows.append({"dataset": dataset, "model": model, "k": int(k[j]),
                         "expected_max": float(estimate[j]), "lo": float(low[j]), "hi": float(high[j]),
                         "expected_max_replacement": float(dodge[j]), "n": n})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def trials_to_reach(curves: pd.DataFrame, target: float) -> pd.DataFrame:
    """Smallest k whose expected best accuracy reaches ``target``, per (dataset, model) (NaN: never)."""
    rows = []
    for (dataset, model), group in curves.groupby(["dataset", "model"], sort=True):
        hit = group.loc[group["expected_max"] >= target, "k"]
        rows.append({"dataset": dataset, "model": model, "target": target,
                     "k": int(hit.min()) if len(hit) else np.nan})
    return pd.DataFrame(rows, columns=["dataset", "model", "target", "k"])
