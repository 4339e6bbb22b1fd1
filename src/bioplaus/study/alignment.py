"""Alignment per epoch: how closely a rule's hidden updates follow backprop's gradient as it learns.

For one (dataset, model) whose estimator can record the angle between its
hidden-layer weight updates and the backpropagated gradient of the same loss
on the same mini-batch (its :attr:`~bioplaus.models.ModelSpec.options` declare
:data:`ALIGNMENT_OPTION`), this module trains each source configuration (the
published default and each sampler's best, as the noise floor takes them,
:func:`~bioplaus.study.repeats.sources_from_best`) on the training rows of
the first fold and records, after every epoch, the mean angle of each hidden
layer and the accuracy on the held-out fold. These are the rows of
``alignment.csv``.

Training is the evaluation's (:func:`~bioplaus.study.evaluation.run_fold`:
same chunked ``partial_fit`` loop, time limit, divergence checks), and the
seeds are those of the first noise-floor repeat
(:func:`~bioplaus.study.repeats.repeat_seeds`; fold split and the first
fold's initialisation and shuffling): recording does not change what is
learnt, so the accuracy after the last epoch is repeat 0's first-fold
accuracy in ``repeats.csv`` (unless the time limit, which also counts the
extra backprop pass, stops this run earlier).

The angle of an epoch is the mean over its mini-batches, each
``partial_fit`` call's mean weighted by its number of batches (calls where
every batch's angle was undefined, a zero update, are left out). Angles are
in degrees in [0, 180]: 0 is backprop's direction, 90 an update orthogonal to
it (no descent on average), above 90 an ascent direction.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from bioplaus.errors import ConfigError
from bioplaus.models.registry import get_model
from bioplaus.study.evaluation import _accuracy, fold_splits, run_fold
from bioplaus.study.repeats import repeat_seeds
from bioplaus.study.seeds import INIT, derive_seed

__all__ = ["ALIGNMENT_OPTION", "ALIGNMENT_COLUMNS", "supports_alignment", "epoch_angles", "run_alignment"]

#: the model option (``ModelSpec.options`` key) that switches the angle record on
ALIGNMENT_OPTION = "record_alignment"

#: columns of ``alignment.csv``, in order (``param_<name>`` columns follow)
ALIGNMENT_COLUMNS = [
    "dataset", "model", "source", "epoch", "epochs_completed", "layer", "angle_deg", "batches",
    "accuracy", "chance", "diverged", "timed_out", "invalid", "error", "message",
    "fold", "seed", "split_seed", "params_json",
]


def supports_alignment(model: str) -> bool:
    """Whether ``model``'s estimator records the alignment angle (its spec declares :data:`ALIGNMENT_OPTION`)."""
    return ALIGNMENT_OPTION in get_model(model).options


def epoch_angles(angles, batches, n_layers: int) -> np.ndarray:
    """Batch-weighted mean angle per hidden layer over ``partial_fit`` calls.

    ``angles``: entries of the estimator's ``alignment_`` (each of shape
    ``(n_layers,)``, NaN where undefined); ``batches``: the matching entries
    of ``alignment_batches_``. Returns shape ``(n_layers,)``, NaN for a layer
    without a defined angle.
    """
    total = np.zeros(n_layers)
    weight = np.zeros(n_layers)
    for a, n in zip(angles, batches):
        a = np.asarray(a, dtype=float)[:n_layers]
        ok = np.isfinite(a)
        total[: len(a)][ok] += float(n) * a[ok]
        weight[: len(a)][ok] += float(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / np.where(weight > 0, weight, 1.0), np.nan)


def _n_hidden(est, seen: int) -> int:
    if seen:
        return seen
    hidden = est.get_params().get("hidden_layer_sizes") if hasattr(est, "get_params") else None
    try:
        return max(1, len(tuple(hidden)))
    except TypeError:
        return 1


def _train_source(model, params, X, y, train_idx, test_idx, *, input_shape, classes, epochs, seed,
                  options, time_limit):
    """Rows ``(epoch, epochs_completed, layer, angle_deg, batches, accuracy)`` and the fold's outcome."""
    rows: list[dict[str, Any]] = []
    state = {"calls": 0, "layers": 0}

    def on_epoch(est, completed):
        angles = list(getattr(est, "alignment_", []))
        batches = list(getattr(est, "alignment_batches_", []))
        new_a, new_b = angles[state["calls"]:], batches[state["calls"]:]
        state["calls"] = len(angles)
        state["layers"] = max(state["layers"], *(len(a) for a in new_a)) if new_a else state["layers"]
        n_layers = _n_hidden(est, state["layers"])
        mean = epoch_angles(new_a, new_b, n_layers)
        accuracy = _accuracy(est, X, y, test_idx)
        for layer in range(n_layers):
            rows.append({
                "epoch": int(math.ceil(completed - 1e-9)), "epochs_completed": float(completed),
                "layer": layer + 1, "angle_deg": float(mean[layer]), "batches": int(sum(new_b)),
                "accuracy": accuracy,
            })

    res = run_fold(
        model, params, X, y, train_idx, test_idx, fold=0, input_shape=input_shape, classes=classes,
        epochs=epochs, seed=seed, options=options, time_limit=time_limit,
        on_epoch=on_epoch,
    )
    return rows, res


def run_alignment(
    *,
    dataset: str,
    model: str,
    sources: Mapping[str, Mapping[str, Any]],
    X: np.ndarray,
    y: np.ndarray,
    input_shape,
    seed: int,
    n_folds: int,
    epochs: int,
    options: Mapping[str, Any] | None = None,
    repeat: int = 0,
    time_limit: float | None = None,
    n_jobs: int = 1,
    out_csv: str | Path | None = None,
    log=print,
) -> pd.DataFrame:
    """Angle to backprop and held-out accuracy after every epoch, for each source configuration.

    Parameters
    ----------
    dataset, model : str
        Names written into the rows; ``model`` must support alignment
        (:func:`supports_alignment`, else :class:`~bioplaus.errors.ConfigError`).
    sources : mapping of str to dict
        ``{source: params}``, e.g. from :func:`~bioplaus.study.repeats.sources_from_best`
        (``default``, ``best_<sampler>``).
    X : array of shape (n_samples, n_features), float32 in [0, 1]; y : int labels (n_samples,).
    input_shape : tuple (channels, height, width).
    seed : int
        Study seed; the split and the model's seeds are noise-floor repeat
        ``repeat``'s (first fold).
    n_folds : int
        Folds of the split (the first one is trained and tested).
    epochs : int
        Passes over the first fold's training rows; one row per (epoch, hidden layer).
    options : dict or None, default None
        The model's options; :data:`ALIGNMENT_OPTION` is set to True on top.
    repeat : int, default 0
        Which noise-floor repeat's seeds to use.
    time_limit : float or None, default None
        CPU seconds of training (including the recording's extra backprop pass)
        before a source stops early (flag ``timed_out``; the last row's
        ``epochs_completed`` is then fractional).
    n_jobs : int, default 1
        Accepted for the command line's ``--threads``; changes nothing: the one
        training process runs with one BLAS thread (:func:`~bioplaus.study.evaluation.run_fold`),
        so that the numbers are those of the study's folds whatever the threads.
    out_csv : path or None, default None
        Write the frame there (through ``<out>.partial.csv``, updated after each
        source, so that a killed run resumes without retraining finished
        sources whose configuration is unchanged).
    log : callable, default print
        Receives one progress line per source.

    Returns
    -------
    pandas.DataFrame with :data:`ALIGNMENT_COLUMNS` and ``param_<name>``
    columns. A source that is invalid, or failed before its first epoch, has
    one row with empty epoch, layer, angle and accuracy and its flag set;
    the flags and message of a source (its fold's outcome) are on all its rows.
    """
    if not supports_alignment(model):
        raise ConfigError(f"model {model!r} does not record the alignment angle "
                          f"(its options declare no {ALIGNMENT_OPTION!r})")
    options = {**dict(options or {}), ALIGNMENT_OPTION: True}
    classes = np.unique(y)
    split_seed, init_seed = repeat_seeds(seed, repeat)
    train_idx, test_idx = fold_splits(y, n_folds, split_seed)[0]
    fold_seed = derive_seed(init_seed, INIT, 0)  # the first fold's seed, as evaluate() derives it

    partial = None
    rows: list[dict[str, Any]] = []
    keys = {s: json.dumps(dict(p), sort_keys=True, default=str) for s, p in sources.items()}
    if out_csv is not None:
        out_csv = Path(out_csv)
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        partial = out_csv.with_name(out_csv.name + ".partial.csv")
        if partial.exists() and partial.stat().st_size:
            done = pd.read_csv(partial, keep_default_na=False, na_values=[""])
            rows = [r for r in done.to_dict("records")
                    if keys.get(r.get("source")) == r.get("params_json") and r.get("seed") == fold_seed
                    and r.get("split_seed") == split_seed]
    have = {r["source"] for r in rows}

    for source, params in sources.items():
        if source in have:
            continue
        t0 = time.perf_counter()
        epoch_rows, res = _train_source(
            model, params, X, y, train_idx, test_idx, input_shape=input_shape, classes=classes,
            epochs=epochs, seed=fold_seed, options=options, time_limit=time_limit)
        if not epoch_rows:  # invalid, or failed before the first epoch ended
            epoch_rows = [{"epoch": None, "epochs_completed": res.epochs_completed, "layer": None,
                           "angle_deg": math.nan, "batches": 0, "accuracy": res.accuracy}]
        outcome = {
            "chance": 1.0 / len(classes), "diverged": res.diverged, "timed_out": res.timed_out,
            "invalid": res.invalid, "error": res.error, "message": res.message,
            "fold": 1, "seed": fold_seed, "split_seed": split_seed, "params_json": keys[source],
        }
        for r in epoch_rows:
            row = {"dataset": dataset, "model": model, "source": source, **r, **outcome}
            row.update({f"param_{p}": v for p, v in params.items()})
            rows.append(row)
        if partial is not None:
            pd.DataFrame(rows).to_csv(partial, index=False)
        last = [r["angle_deg"] for r in epoch_rows if r["epoch"] == epoch_rows[-1]["epoch"]]
        last = [a for a in last if np.isfinite(a)]
        angle = float(np.mean(last)) if last else math.nan
        status = next((k for k in ("invalid", "error", "diverged", "timed_out") if outcome[k]), "ok")
        log(f"[{dataset}/{model}] alignment of {source}: {status}, {res.epochs_completed:.2f} epochs, "
            f"last angle {angle:.1f} deg, accuracy {res.accuracy:.4f} in {time.perf_counter() - t0:.1f} s")

    frame = pd.DataFrame(rows)
    params_cols = [c for c in frame.columns if c.startswith("param_")]
    frame = frame.reindex(columns=ALIGNMENT_COLUMNS + params_cols)
    for column in ("epoch", "layer", "batches", "fold", "seed", "split_seed"):  # integers, empty where undefined
        frame[column] = pd.array(pd.to_numeric(frame[column]).round(), dtype="Int64")
    if out_csv is not None:
        tmp = out_csv.with_name(out_csv.name + ".tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(out_csv)
        partial.unlink(missing_ok=True)
    return frame
