"""Transfer across datasets: the regret of using another dataset's best configuration.

Owns :func:`transfer_table`, from the rows the transfer evaluation writes
(``results/<target>/<model>/transfer_rows.csv``: repeats.csv columns plus
``source_dataset``, ``source_sampler``, ``source_accuracy``; see
:mod:`bioplaus.study.transfer`).

Definitions, per (source dataset *s*, target dataset *t*, model):

* ``accuracy`` / ``accuracy_sd``: mean and standard deviation (ddof=1) over
  the ``n_repeats`` valid refits on *t* of the best configuration found on *s*
  (the most accurate of *s*'s ``best.json`` files); ``n_invalid`` counts refits
  where the configuration cannot run on *t* (a CNN geometry too large for its
  images): all invalid gives NaN accuracy and regret.
* ``target_best``: the per-dataset best of *t*: the mean refitted accuracy of
  *t*'s own best configurations (``repeats.csv`` sources ``best_*``, the best of
  them; ``target_best_kind == "refit"``), else the best valid trial accuracy
  on *t* (``"trial"``, optimistic: a maximum over noisy trials).
* ``regret = target_best - accuracy`` (accuracy lost by not re-tuning on *t*;
  negative when the transferred configuration does better), and
  ``regret_normalised = regret / (target_best - chance)`` (the share of the
  target's above-chance accuracy lost).

A rule that only works when re-tuned per dataset is less robust than its
per-dataset numbers suggest: its regrets are large.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bioplaus.analysis.loading import _prepare
from bioplaus.analysis.statistics import valid_mask

TRANSFER_TABLE_COLUMNS = [
    "source_dataset", "target_dataset", "model", "source_sampler", "source_accuracy", "accuracy",
    "accuracy_sd", "n_repeats", "n_invalid",
    "target_best", "target_best_kind", "regret", "regret_normalised",
]


def _target_best(trials, repeats, dataset, model):
    if repeats is not None and len(repeats):
        frame = _prepare(repeats)
        frame = frame[valid_mask(frame) & (frame["dataset"] == dataset) & (frame["model"] == model)]
        means = [g["accuracy"].mean() for s, g in frame.groupby("source") if str(s).startswith("best")]
        if means:
            return float(max(means)), "refit"
    if trials is not None and len(trials):
        frame = _prepare(trials)
        frame = frame[valid_mask(frame) & (frame["dataset"] == dataset) & (frame["model"] == model)
                      & (frame["source"] == "ours")]
        if len(frame):
            return float(frame["accuracy"].max()), "trial"
    return np.nan, ""


def transfer_table(rows: pd.DataFrame, *, trials: pd.DataFrame | None = None,
                   repeats: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (source dataset, target dataset, model) of :data:`TRANSFER_TABLE_COLUMNS`.

    ``rows``: transfer rows (module docstring); ``trials``/``repeats``: the
    target datasets' trials and repeats, for ``target_best``. Raises
    ``ValueError`` when ``rows`` lacks ``source_dataset``.
    """
    if "source_dataset" not in rows.columns and len(rows):
        raise ValueError("transfer rows lack the column 'source_dataset' (written by `bioplaus transfer`)")
    out = []
    if len(rows):
        frame = _prepare(rows)
        frame["_valid"] = valid_mask(frame)
        keys = ["source_dataset", "dataset", "model"]
        for (source, target, model), group in frame.groupby(keys, sort=True):
            acc = group.loc[group["_valid"], "accuracy"].to_numpy(dtype=float)
            best, kind = _target_best(trials, repeats, target, model)
            chance = float(group["chance"].median())
            mean = float(acc.mean()) if len(acc) else np.nan
            regret = best - mean
            out.append({
                "source_dataset": source, "target_dataset": target, "model": model,
                "source_sampler": group["source_sampler"].iloc[0] if "source_sampler" in group else "",
                "source_accuracy": (float(group["source_accuracy"].iloc[0])
                                    if "source_accuracy" in group else np.nan),
                "accuracy": mean, "accuracy_sd": float(acc.std(ddof=1)) if len(acc) > 1 else np.nan,
                "n_repeats": len(acc), "n_invalid": int(group["invalid"].sum()), "target_best": best, "target_best_kind": kind, "regret": regret,
                "regret_normalised": regret / (best - chance) if best - chance > 0 else np.nan,
            })
    return pd.DataFrame(out, columns=TRANSFER_TABLE_COLUMNS)
