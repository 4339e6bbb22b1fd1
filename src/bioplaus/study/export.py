"""A study's tables: ``trials.csv`` and ``best.json``, written atomically.

``trials.csv`` lists the evaluated trials: COMPLETE ones (valid, or
``invalid``: evaluated at once, not counted in ``n_trials``), FAIL ones (an
evaluation error, or a worker that died, with a message). Skipped trials
(never evaluated) stay in the storage only, so the tables of a study do not
depend on how many workers ran it. ``draw`` is a trial's draw index (its seeds
derive from it, see :mod:`bioplaus.study.slots`): sorted by ``draw``, the
valid rows of a killed-and-resumed ``random`` study equal an uninterrupted
one's. ``best.json`` holds the best valid
COMPLETE trial that was not censored.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from bioplaus.models.registry import get_model
from bioplaus.study.settings import StudySettings
from bioplaus.study.slots import trial_kind


def trials_frame(study: optuna.Study, settings: StudySettings) -> pd.DataFrame:
    """One row per evaluated trial in the ``trials.csv`` layout (see the README).

    Trials skipped without evaluation (surplus asks of racing workers,
    duplicate points, superseded re-queued copies) and queued trials are left
    out; they stay in the storage. A RUNNING trial (an export while the study
    runs) appears with state RUNNING."""
    space = get_model(settings.model).search_space(settings.options)
    rows = []
    for t in study.get_trials(deepcopy=False):
        if trial_kind(t) in ("skipped", "duplicate", "waiting"):  # never evaluated (see bioplaus.study.slots)
            continue
        ua = t.user_attrs
        accs = ua.get("fold_accuracies") or [None] * settings.n_folds
        secs = ua.get("fold_fit_seconds") or [math.nan] * settings.n_folds
        acc = ua.get("accuracy")
        row: dict[str, Any] = {
            "dataset": settings.dataset,
            "model": settings.model,
            "sampler": settings.sampler,
            "number": t.number,
            "state": t.state.name,
            "value": t.value if t.value is not None else math.nan,
            "accuracy": math.nan if acc is None else acc,
        }
        for k in range(settings.n_folds):
            a = accs[k] if k < len(accs) else None
            row[f"accuracy_fold_{k + 1}"] = math.nan if a is None else a
        row.update(epoch_columns(ua, settings.epochs))
        row["fit_seconds"] = ua.get("fit_seconds", math.nan)
        for k in range(settings.n_folds):
            row[f"fit_seconds_fold_{k + 1}"] = secs[k] if k < len(secs) else math.nan
        row["duration_seconds"] = ua.get("duration_seconds", math.nan)
        row["diverged"] = bool(ua.get("diverged", False))
        row["censored"] = bool(ua.get("censored", ua.get("timed_out", False)))  # timed_out: older storages
        row["invalid"] = bool(ua.get("invalid", False))
        message = ua.get("message", "")
        if not message and trial_kind(t) == "died":
            message = "worker died during this trial; configuration re-queued"
        row["message"] = message
        row["seed"] = ua.get("seed", -1)
        row["origin"] = ua.get("origin", t.number)
        row["draw"] = ua.get("draw", -1)
        row["n_classes"] = ua.get("n_classes", math.nan)
        row["chance"] = ua.get("chance", math.nan)
        for p in space:
            row[f"param_{p}"] = t.params.get(p)
        rows.append(row)
    cols = None if rows else ["dataset", "model", "sampler", "number", "state", "value", "accuracy"]
    return pd.DataFrame(rows, columns=cols)


def epoch_columns(record: dict[str, Any], epochs: int) -> dict[str, float]:
    """``epochs_completed`` and ``accuracy_epoch_1`` .. ``accuracy_epoch_<epochs>`` (mean test
    accuracy over folds after each epoch; NaN where not every fold completed it) of an
    evaluation record (:meth:`bioplaus.study.evaluation.EvaluationResult.as_record`). Records
    of older storages lack the curve: its columns are NaN; ``epochs_completed`` then falls
    back to the smallest of ``fold_epochs``."""
    completed = record.get("epochs_completed")
    if completed is None:
        folds = [e for e in (record.get("fold_epochs") or []) if e is not None]
        completed = min(folds) if folds else math.nan
    out: dict[str, float] = {"epochs_completed": float(completed)}
    curve = record.get("epoch_accuracies") or []
    for e in range(int(epochs)):
        value = curve[e] if e < len(curve) else None
        out[f"accuracy_epoch_{e + 1}"] = math.nan if value is None else float(value)
    return out


def best_record(study: optuna.Study, settings: StudySettings) -> dict[str, Any]:
    """The best valid COMPLETE trial (highest mean accuracy; censored trials, cut short by
    the time limit, are not candidates) as a JSON-able dict."""
    best = None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        acc = t.user_attrs.get("accuracy")
        ua = t.user_attrs
        if acc is None or ua.get("invalid") or ua.get("censored", ua.get("timed_out")):
            continue
        if best is None or acc > best.user_attrs["accuracy"]:
            best = t
    out: dict[str, Any] = {
        "dataset": settings.dataset, "model": settings.model, "sampler": settings.sampler,
        "n_trials": settings.n_trials, "n_folds": settings.n_folds, "epochs": settings.epochs,
        "seed": settings.seed,
    }
    if best is None:
        out.update({"number": None, "accuracy": None, "params": None})
    else:
        out.update({
            "number": best.number,
            "accuracy": best.user_attrs["accuracy"],
            "fold_accuracies": best.user_attrs.get("fold_accuracies"),
            "params": best.params,
        })
    return out


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so that readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_outputs(study: optuna.Study, settings: StudySettings, out_dir: Path) -> tuple[Path, Path]:
    """Write ``trials.csv`` and ``best.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    frame = trials_frame(study, settings)
    trials_path, best_path = out_dir / "trials.csv", out_dir / "best.json"
    write_atomic(trials_path, frame.to_csv(index=False))
    write_atomic(best_path, json.dumps(best_record(study, settings), indent=2, default=_json_default) + "\n")
    return trials_path, best_path


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    raise TypeError(f"not JSON serialisable: {obj!r}")
