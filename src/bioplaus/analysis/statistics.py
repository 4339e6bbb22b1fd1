"""Robustness metrics and tables over the optimisation trials.

Owns the definitions of the robustness metrics below (every function of the
package uses these constants), the per-study table (:func:`summarize`), the
seed-noise table (:func:`noise_table`), the "learns" curves
(:func:`learns_curve`), the metrics after each training epoch
(:func:`learning_table`) and the model comparison with Mann-Whitney U and
bootstrap confidence intervals (:func:`compare`).

Input rows have the columns of ``results/<dataset>/<model>/<sampler>/trials.csv``
(one row per optuna trial; see :data:`bioplaus.analysis.loading.BASE_COLUMNS`) and,
for the noise floor, of ``results/<dataset>/<model>/repeats.csv``. Accuracies are fractions in [0, 1]
(mean 3-fold cross-validated test accuracy); times are seconds.

Definitions (the README quotes them; every function here uses these constants):

* **chance** = 1 / n_classes (the ``chance`` column; ``1 / n_classes`` when absent).
* **at chance**: accuracy < chance + :data:`AT_CHANCE_MARGIN` (0.02).
* **learns**: accuracy >= chance + :data:`LEARNS_MARGIN` (0.10).
* **near best**: accuracy >= best - :data:`NEAR_BEST_MARGIN` (0.05), where best is the
  best accuracy found by any sampler for that (dataset, model) within one source
  (ours and the 2019 study each have their own best: their protocols differ).
* **valid** trial: state ``COMPLETE``, not ``invalid``, not ``censored``, with a
  finite accuracy. Invalid trials are counted (``n_invalid``) but excluded from
  every accuracy distribution. *Censored* trials (training cut short by the
  time limit, a guard against runaway configurations) are counted
  (``n_censored``) and drawn hollow in the per-trial figures, but excluded from
  every distribution, fraction, importance, comparison and test: their
  accuracy measures the budget, not the configuration. Diverged trials were
  trained as configured and enter the distributions with their measured
  accuracy.
"""

from __future__ import annotations

import zlib

from typing import Any, Sequence

import numpy as np
import pandas as pd

from bioplaus.analysis.loading import _prepare

#: accuracy < chance + AT_CHANCE_MARGIN counts as "at chance".
AT_CHANCE_MARGIN = 0.02
#: accuracy >= chance + LEARNS_MARGIN counts as "learns".
LEARNS_MARGIN = 0.10
#: accuracy >= best - NEAR_BEST_MARGIN counts as "near best".
NEAR_BEST_MARGIN = 0.05
#: tolerance of the threshold comparisons, so that e.g. 0.12 counts as 0.1 + 0.02 exactly
THRESHOLD_TOLERANCE = 1e-9

GROUP_COLUMNS = ["dataset", "model", "sampler", "source"]


# ----------------------------------------------------------------------------- definitions
def valid_mask(trials: pd.DataFrame) -> pd.Series:
    """True for valid trials: COMPLETE, not invalid, not censored, finite accuracy."""
    frame = _prepare(trials)
    return (
        (frame["state"] == "COMPLETE")
        & ~frame["invalid"].astype(bool)
        & ~frame["censored"].astype(bool)
        & np.isfinite(frame["accuracy"])
    )


def censored_mask(trials: pd.DataFrame) -> pd.Series:
    """True for censored trials: COMPLETE, not invalid, training stopped by the time limit."""
    frame = _prepare(trials)
    return (
        (frame["state"] == "COMPLETE")
        & ~frame["invalid"].astype(bool)
        & frame["censored"].astype(bool)
    )


def at_chance(accuracy, chance):
    """Boolean array: accuracy < chance + AT_CHANCE_MARGIN (up to THRESHOLD_TOLERANCE)."""
    bound = np.asarray(chance, dtype=float) + AT_CHANCE_MARGIN - THRESHOLD_TOLERANCE
    return np.asarray(accuracy, dtype=float) < bound


def learns(accuracy, chance):
    """Boolean array: accuracy >= chance + LEARNS_MARGIN (up to THRESHOLD_TOLERANCE)."""
    bound = np.asarray(chance, dtype=float) + LEARNS_MARGIN - THRESHOLD_TOLERANCE
    return np.asarray(accuracy, dtype=float) >= bound


def near_best(accuracy, best):
    """Boolean array: accuracy >= best - NEAR_BEST_MARGIN (up to THRESHOLD_TOLERANCE)."""
    bound = np.asarray(best, dtype=float) - NEAR_BEST_MARGIN - THRESHOLD_TOLERANCE
    return np.asarray(accuracy, dtype=float) >= bound


def noise_table(repeats: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model): noise_sd, noise_sd_default, noise_sd_best from repeats rows.

    For each refitted setting (``source``: ``default``, ``best_gp``, ...) the
    seed-to-seed standard deviation (ddof=1) of the valid accuracies;
    ``noise_sd`` = median over settings, ``noise_sd_default`` = the ``default``
    setting's, ``noise_sd_best`` = median over the ``best_*`` settings.
    """
    frame = _prepare(repeats)
    frame = frame[valid_mask(frame)]
    rows = []
    for (dataset, model), group in frame.groupby(["dataset", "model"], sort=True):
        sds = {
            source: float(np.std(g["accuracy"].to_numpy(), ddof=1)) if len(g) > 1 else np.nan
            for source, g in group.groupby("source")
        }
        best = [v for k, v in sds.items() if str(k).startswith("best")]
        finite = [v for v in sds.values() if np.isfinite(v)]
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "noise_sd": float(np.median(finite)) if finite else np.nan,
                "noise_sd_default": sds.get("default", np.nan),
                "noise_sd_best": float(np.nanmedian(best)) if np.isfinite(best).any() else np.nan,
                "n_repeats": int(group.groupby("source").size().max()),
            }
        )
    return pd.DataFrame(
        rows, columns=["dataset", "model", "noise_sd", "noise_sd_default", "noise_sd_best", "n_repeats"]
    )



# ----------------------------------------------------------------------------- summarize
#: bootstrap resamples behind the median intervals of :func:`summarize`
SUMMARY_BOOTSTRAP = 2000


def summarize(trials: pd.DataFrame, repeats: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (dataset, model, sampler, source) of accuracy-distribution statistics.

    ``source`` is ``ours`` for pipeline rows, ``2019`` for reference rows
    (:func:`bioplaus.analysis.reference.load_reference_logs`). Columns:

    * ``n``: valid trials (COMPLETE, not invalid, not censored, finite accuracy);
      ``n_invalid``: COMPLETE trials flagged invalid; ``n_censored``: COMPLETE trials
      cut short by the time limit (not in ``n`` nor in any statistic below);
      ``n_diverged``: valid trials that diverged; ``n_failed``: trials in state
      FAIL plus COMPLETE, not-invalid, not-censored trials without an accuracy.
    * ``min``, ``q25``, ``median``, ``q75``, ``max``, ``mean``, ``std`` (ddof=1) of the
      valid accuracies (quantiles by linear interpolation, as ``numpy.quantile``).
    * ``frac_at_chance``, ``frac_learns``, ``frac_near_best``: fractions of the
      valid trials (module definitions; best per (dataset, model, source) over samplers).
    * ``frac_learns_lo``, ``frac_learns_hi``: its 95% Wilson interval
      (:func:`wilson_interval`); ``median_lo``, ``median_hi``: percentile-bootstrap
      95% interval of the median (:data:`SUMMARY_BOOTSTRAP` resamples, seeded by
      the group's key, so a group's interval does not depend on the other groups).
    * ``best`` and ``best_number`` (trial number of the best accuracy, first one on ties).
    * ``median_fit_seconds`` (sum over folds) and ``median_duration_seconds``
      (trial wall time), over valid trials, NaN where not recorded.
    * with ``repeats``: ``noise_sd``, ``noise_sd_default``, ``noise_sd_best``
      (see :func:`noise_table`), attached to ``ours`` rows only (NaN for 2019 rows).
    """
    frame = _prepare(trials)
    valid = valid_mask(frame)
    frame["_valid"] = valid
    best_overall = (
        frame[valid].groupby(["dataset", "model", "source"])["accuracy"].max().rename("_best_any")
    )
    rows = []
    for key, group in frame.groupby(GROUP_COLUMNS, sort=True, dropna=False):
        complete = group["state"] == "COMPLETE"
        good = group[group["_valid"]]
        acc = good["accuracy"].to_numpy(dtype=np.float64)
        chance = good["chance"].to_numpy(dtype=np.float64)
        row: dict[str, Any] = dict(zip(GROUP_COLUMNS, key))
        row["n"] = int(len(good))
        row["n_invalid"] = int((complete & group["invalid"]).sum())
        row["n_censored"] = int((complete & ~group["invalid"] & group["censored"]).sum())
        row["n_diverged"] = int(good["diverged"].sum())
        row["n_failed"] = int(
            (group["state"] == "FAIL").sum()
            + (complete & ~group["invalid"] & ~group["censored"]
               & ~np.isfinite(group["accuracy"])).sum()
        )
        if len(acc):
            q = np.quantile(acc, [0.0, 0.25, 0.5, 0.75, 1.0])
            best_any = best_overall.loc[(key[0], key[1], key[3])]
            best_index = int(np.argmax(acc))
            n_learn = int(learns(acc, chance).sum())
            learn_lo, learn_hi = wilson_interval(n_learn, len(acc))
            medians, _ = _bootstrap(acc, chance, SUMMARY_BOOTSTRAP, np.random.default_rng(zlib.crc32(repr(key).encode())))
            median_lo, median_hi = _ci(medians)
            row.update(
                frac_learns_lo=float(learn_lo), frac_learns_hi=float(learn_hi),
                median_lo=median_lo, median_hi=median_hi,
                min=q[0], q25=q[1], median=q[2], q75=q[3], max=q[4],
                mean=float(acc.mean()),
                std=float(acc.std(ddof=1)) if len(acc) > 1 else np.nan,
                frac_at_chance=float(at_chance(acc, chance).mean()),
                frac_learns=float(learns(acc, chance).mean()),
                frac_near_best=float(near_best(acc, best_any).mean()),
                best=float(acc[best_index]),
                best_number=(
                    int(good["number"].iloc[best_index]) if "number" in good.columns else best_index
                ),
            )
        else:
            row.update({k: np.nan for k in (
                "min", "q25", "median", "q75", "max", "mean", "std", "frac_at_chance",
                "frac_learns", "frac_learns_lo", "frac_learns_hi", "median_lo", "median_hi",
                "frac_near_best", "best", "best_number")})
        for column, out in (("fit_seconds", "median_fit_seconds"),
                            ("duration_seconds", "median_duration_seconds")):
            seconds = good[column].to_numpy(dtype=np.float64) if column in good else np.array([])
            seconds = seconds[np.isfinite(seconds)]
            row[out] = float(np.median(seconds)) if len(seconds) else np.nan
        rows.append(row)
    columns = GROUP_COLUMNS + [
        "n", "n_invalid", "n_censored", "n_diverged", "n_failed", "min", "q25", "median",
        "q75", "max", "mean", "std", "frac_at_chance", "frac_learns", "frac_learns_lo",
        "frac_learns_hi", "median_lo", "median_hi", "frac_near_best",
        "best", "best_number", "median_fit_seconds", "median_duration_seconds",
    ]
    table = pd.DataFrame(rows, columns=columns)
    table["best_number"] = table["best_number"].astype("Int64")
    if repeats is not None:
        noise = noise_table(repeats).drop(columns="n_repeats")
        table = table.merge(noise, on=["dataset", "model"], how="left")
        not_ours = table["source"] != "ours"
        table.loc[not_ours, ["noise_sd", "noise_sd_default", "noise_sd_best"]] = np.nan
    return table


# ----------------------------------------------------------------------------- curves
def learns_curve(trials: pd.DataFrame, grid: Sequence[float]) -> pd.DataFrame:
    """Fraction of valid configurations with accuracy >= a, for each a in ``grid``.

    Long format, one row per (dataset, model, sampler, source, threshold):
    columns ``threshold`` (accuracy, fraction), ``fraction`` (in [0, 1]) and ``n``
    (valid trials of that group). Thresholds are absolute accuracies.
    """
    grid = np.asarray(grid, dtype=np.float64).ravel()
    frame = _prepare(trials)
    frame = frame[valid_mask(frame)]
    rows = []
    for key, group in frame.groupby(GROUP_COLUMNS, sort=True):
        acc = np.sort(group["accuracy"].to_numpy(dtype=np.float64))
        # count of acc >= a = n - (number of acc < a)
        fraction = 1.0 - np.searchsorted(acc, grid - THRESHOLD_TOLERANCE, side="left") / len(acc)
        for threshold, value in zip(grid, fraction):
            rows.append({**dict(zip(GROUP_COLUMNS, key)), "threshold": float(threshold),
                         "fraction": float(value), "n": len(acc)})
    return pd.DataFrame(rows, columns=GROUP_COLUMNS + ["threshold", "fraction", "n"])


# ----------------------------------------------------------------------------- per epoch
#: two-sided normal quantile of the 95% intervals of :func:`learning_table`
_Z95 = 1.959963984540054


def wilson_interval(k, n, z: float = _Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial fraction k / n (Wilson 1927, JASA 22:209):
    ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``; NaN where n = 0."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denominator = 1.0 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    return centre - half, centre + half


def learning_table(trials: pd.DataFrame) -> pd.DataFrame:
    """The robustness metrics after each training epoch, from the ``accuracy_epoch_*`` columns.

    One row per (dataset, model, sampler, source, epoch) over the valid trials
    (see :func:`valid_mask`: censored ones are left out) that recorded that
    epoch: ``n``; ``frac_learns`` with its 95% Wilson interval
    (``frac_learns_lo``, ``frac_learns_hi``, :func:`wilson_interval`);
    ``frac_at_chance``; ``q25``, ``median``, ``q75``, ``max`` of the mean
    cross-validated test accuracy after that epoch. The last epoch's row equals
    the end-point metrics of :func:`summarize` (the last epoch's accuracy is
    the trial's accuracy). Returns an empty table when no epoch column exists
    (tables of the 2019 study, or written before the curves were recorded).
    """
    from bioplaus.analysis.loading import epoch_columns

    columns = GROUP_COLUMNS + ["epoch", "n", "frac_learns", "frac_learns_lo", "frac_learns_hi",
                               "frac_at_chance", "q25", "median", "q75", "max"]
    frame = _prepare(trials)
    epochs = epoch_columns(frame)
    frame = frame[valid_mask(frame)]
    rows = []
    for key, group in frame.groupby(GROUP_COLUMNS, sort=True):
        for column in epochs:
            values = pd.to_numeric(group[column], errors="coerce").to_numpy(dtype=np.float64)
            chance = group["chance"].to_numpy(dtype=np.float64)
            keep = np.isfinite(values)
            acc, chance = values[keep], chance[keep]
            if not len(acc):
                continue
            n_learn = int(learns(acc, chance).sum())
            low, high = wilson_interval(n_learn, len(acc))
            q = np.quantile(acc, [0.25, 0.5, 0.75])
            rows.append({
                **dict(zip(GROUP_COLUMNS, key)), "epoch": int(column.rsplit("_", 1)[1]),
                "n": int(len(acc)), "frac_learns": n_learn / len(acc),
                "frac_learns_lo": float(low), "frac_learns_hi": float(high),
                "frac_at_chance": float(at_chance(acc, chance).mean()),
                "q25": q[0], "median": q[1], "q75": q[2], "max": float(acc.max()),
            })
    return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------------------- compare
def _bootstrap(values: np.ndarray, chance: np.ndarray, n_boot: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap replicates (n_boot,) of the median and of the learns fraction."""
    if len(values) == 0:
        return np.full(n_boot, np.nan), np.full(n_boot, np.nan)
    index = rng.integers(0, len(values), size=(n_boot, len(values)))
    medians = np.median(values[index], axis=1)
    fractions = learns(values[index], chance[index]).mean(axis=1)
    return medians, fractions


def _ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    if not np.isfinite(replicates).any():
        return np.nan, np.nan
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def is_backprop(model: str) -> bool:
    """Whether ``model`` is a backprop baseline (``ModelSpec.backprop``; unknown models: False)."""
    from bioplaus.errors import ConfigError
    from bioplaus.models import get_model

    try:
        return bool(get_model(model).backprop)
    except ConfigError:
        return False


def comparison_pairs(models: Sequence[str], *, reference_model: str | None = None,
                     baselines: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(reference, other) pairs :func:`compare` tests, in a fixed order.

    With ``reference_model``: it against every other model. Otherwise every
    model that is not a backprop baseline against each baseline (``baselines``,
    default: the models whose ``ModelSpec.backprop`` is True; a model unknown to
    the registry counts as a rule, not a baseline).
    """
    models = sorted(dict.fromkeys(models))
    if reference_model is not None:
        return [(reference_model, m) for m in models if m != reference_model]
    base = set(baselines) if baselines is not None else {m for m in models if is_backprop(m)}
    return [(rule, b) for rule in models if rule not in base for b in models if b in base]


def compare(
    trials: pd.DataFrame,
    *,
    reference_model: str | None = None,
    baselines: Sequence[str] | None = None,
    sampler: str | None = "random",
    source: str = "ours",
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per dataset, each rule's accuracy distribution against each backprop baseline's.

    The pairs are :func:`comparison_pairs` (every non-backprop model against
    each backprop model, or ``reference_model`` against every other model); the
    column ``reference_model`` holds the rule, ``model`` the baseline. Uses the
    valid trials of ``sampler`` (default ``random``: a uniform sample of each
    search space; ``None`` pools all samplers) and ``source``. For every dataset
    holding both models of a pair, one row with:

    * ``n_reference``, ``n_other``; ``median_reference``, ``median_other``,
      ``median_diff`` (= reference - other) and ``learns_reference``,
      ``learns_other``, ``learns_diff`` (fractions that learn, see module
      definitions), each with a percentile bootstrap 95% CI (``*_lo``, ``*_hi``;
      ``n_boot`` resamples of each group, drawn independently; the difference's
      replicates pair the two groups' replicates).
    * ``U`` = Mann-Whitney U statistic of the reference sample
      (``scipy.stats.mannwhitneyu(reference, other, alternative="two-sided")``), ``p``
      its two-sided p-value, and ``rank_biserial`` = 2 U / (n_reference n_other) - 1
      = P(reference > other) - P(reference < other), in [-1, 1] (negative: the
      reference model tends to reach lower accuracy).
    """
    from scipy.stats import mannwhitneyu

    frame = _prepare(trials)
    frame = frame[valid_mask(frame) & (frame["source"] == source)]
    if sampler is not None:
        frame = frame[frame["sampler"] == sampler]
    rng = np.random.default_rng(seed)
    rows = []
    pairs = comparison_pairs(frame["model"].astype(str), reference_model=reference_model,
                             baselines=baselines)
    for dataset, group in frame.groupby("dataset", sort=True):
        present = set(group["model"].astype(str))
        for rule, model in pairs:
            if rule not in present or model not in present:
                continue
            ref = group[group["model"] == rule]
            other = group[group["model"] == model]
            ref_acc = ref["accuracy"].to_numpy(dtype=np.float64)
            ref_chance = ref["chance"].to_numpy(dtype=np.float64)
            ref_med, ref_learn = _bootstrap(ref_acc, ref_chance, n_boot, rng)
            acc = other["accuracy"].to_numpy(dtype=np.float64)
            chance = other["chance"].to_numpy(dtype=np.float64)
            med, learn = _bootstrap(acc, chance, n_boot, rng)
            result = mannwhitneyu(ref_acc, acc, alternative="two-sided")
            u = float(result.statistic)
            row = {
                "dataset": dataset, "reference_model": rule, "model": model,
                "sampler": sampler if sampler is not None else "all",
                "n_reference": len(ref_acc), "n_other": len(acc),
            }
            estimates = {
                "median_reference": (float(np.median(ref_acc)), ref_med),
                "median_other": (float(np.median(acc)), med),
                "median_diff": (float(np.median(ref_acc) - np.median(acc)), ref_med - med),
                "learns_reference": (float(learns(ref_acc, ref_chance).mean()), ref_learn),
                "learns_other": (float(learns(acc, chance).mean()), learn),
                "learns_diff": (
                    float(learns(ref_acc, ref_chance).mean() - learns(acc, chance).mean()),
                    ref_learn - learn,
                ),
            }
            for name, (estimate, replicates) in estimates.items():
                low, high = _ci(replicates)
                row[name], row[f"{name}_lo"], row[f"{name}_hi"] = estimate, low, high
            row["U"] = u
            row["p"] = float(result.pvalue)
            row["rank_biserial"] = 2.0 * u / (len(ref_acc) * len(acc)) - 1.0
            rows.append(row)
    stats = ["median_reference", "median_other", "median_diff",
             "learns_reference", "learns_other", "learns_diff"]
    columns = ["dataset", "reference_model", "model", "sampler", "n_reference", "n_other"]
    for name in stats:
        columns += [name, f"{name}_lo", f"{name}_hi"]
    columns += ["U", "p", "rank_biserial"]
    return pd.DataFrame(rows, columns=columns)
