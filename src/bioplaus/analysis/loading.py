"""Reading the pipeline's trial tables into tidy DataFrames.

Owns the column schema of ``results/<dataset>/<model>/<sampler>/trials.csv`` (one
row per optuna trial; see :data:`BASE_COLUMNS`) and of
``results/<dataset>/<model>/repeats.csv`` (the same columns plus ``repeat``), the
conversion of their CSV cells to fixed dtypes (:func:`load_trials`) and the
filling-in of optional columns before any statistic is computed (:func:`_prepare`).
Accuracies are fractions in [0, 1]; times are seconds. Tables written before
the ``censored`` flag existed call it ``timed_out``; both readers accept either.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

#: Fixed columns of trials.csv (plus accuracy_fold_*, accuracy_epoch_*, fit_seconds_fold_*, param_*).
BASE_COLUMNS = [
    "dataset", "model", "sampler", "source", "number", "state", "value", "accuracy",
    "epochs_completed", "fit_seconds", "duration_seconds", "diverged", "censored", "invalid",
    "message", "seed", "n_classes", "chance",
]
FLAG_COLUMNS = ["diverged", "censored", "invalid"]
#: the former name of ``censored`` (read from older tables)
_OLD_CENSORED = "timed_out"
#: prefix of the per-epoch mean accuracies (``accuracy_epoch_1`` ..)
EPOCH_PREFIX = "accuracy_epoch_"
_TRUE = {"true", "1", "1.0", "yes", "t", "y"}
_FALSE = {"false", "0", "0.0", "no", "f", "n", ""}


# ----------------------------------------------------------------------------- loading
def _to_bool(column: pd.Series, *, name: str, missing: bool | None = False) -> pd.Series:
    """Booleans from bools/0-1 numbers/CSV strings; ``missing`` fills NaN (None keeps NA)."""
    if column.dtype == bool:
        return column

    def convert(value):
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            return missing if missing is not None else pd.NA
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False if text else (missing if missing is not None else pd.NA)
        raise ValueError(f"column {name!r}: cannot read {value!r} as a boolean")

    converted = column.map(convert)
    if converted.isna().any():
        return converted.astype("boolean")
    return converted.astype(bool)


def _looks_boolean(column: pd.Series) -> bool:
    if column.dtype == bool or str(column.dtype) == "boolean":
        return True
    if column.dtype.kind in "iuf" or column.dropna().empty:
        return False
    values = {str(v).strip().lower() for v in column.dropna().unique()}
    return values <= {"true", "false"}


def _tidy(
    frame: pd.DataFrame, *, default_source: str = "ours", boolean_params: Iterable[str] = ()
) -> pd.DataFrame:
    """Known columns only, in a fixed order, with fixed dtypes (does not modify ``frame``).

    ``boolean_params``: param columns known to be boolean (e.g. from one file)
    even if concatenation turned them into floats/objects.
    """
    boolean_params = set(boolean_params)
    frame = _renamed_flags(frame.copy())
    if "source" not in frame.columns:
        frame["source"] = default_source
    if "chance" not in frame.columns and "n_classes" in frame.columns:
        frame["chance"] = 1.0 / frame["n_classes"].astype(float)
    for flag in FLAG_COLUMNS:
        if flag in frame.columns:
            frame[flag] = _to_bool(frame[flag], name=flag, missing=False)
        else:
            frame[flag] = False
    if "message" in frame.columns:
        frame["message"] = frame["message"].map(lambda v: "" if pd.isna(v) else str(v)).astype(str)
    for column in ("accuracy", "value", "epochs_completed", "fit_seconds", "duration_seconds",
                   "chance", *epoch_columns(frame)):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
    for column in frame.columns:
        if column.startswith("param_") and (
            column in boolean_params or _looks_boolean(frame[column])
        ):
            frame[column] = _to_bool(frame[column], name=column, missing=None)
    base = [c for c in BASE_COLUMNS + ["repeat"] if c in frame.columns]
    folds = sorted(
        (c for c in frame.columns if c.startswith(("accuracy_fold_", "fit_seconds_fold_"))),
        key=lambda c: (c.startswith("fit"), int(c.rsplit("_", 1)[1]) if c[-1].isdigit() else 0),
    )
    params = sorted(c for c in frame.columns if c.startswith("param_"))
    return frame[base + folds + epoch_columns(frame) + params]


def epoch_columns(frame: pd.DataFrame) -> list[str]:
    """The ``accuracy_epoch_<e>`` columns of ``frame``, in epoch order."""
    found = [c for c in frame.columns if c.startswith(EPOCH_PREFIX) and c[len(EPOCH_PREFIX):].isdigit()]
    return sorted(found, key=lambda c: int(c[len(EPOCH_PREFIX):]))


def _renamed_flags(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with an old ``timed_out`` column read as ``censored`` (modifies ``frame``)."""
    if _OLD_CENSORED in frame.columns:
        old = frame.pop(_OLD_CENSORED)
        if "censored" not in frame.columns:
            frame["censored"] = old
        else:  # concatenated old and new tables: each row has one of the two
            frame["censored"] = frame["censored"].where(frame["censored"].notna(), old)
    return frame


def load_trials(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate ``trials.csv`` (or ``repeats.csv``) files into one tidy DataFrame.

    Keeps the known columns (:data:`BASE_COLUMNS`, ``repeat``, ``accuracy_fold_*``,
    ``fit_seconds_fold_*``, ``accuracy_epoch_*``, ``param_*``) in a fixed order and
    drops the rest; ``diverged``/``censored``/``invalid`` become bool (CSV strings
    ``True``/``False``, blanks are False; an older table's ``timed_out`` is read as
    ``censored``), boolean-looking ``param_*`` columns become bool (nullable
    when a model lacks that parameter), ``message`` blanks become ``""`` and a
    missing ``source`` column is filled with ``"ours"``. Raises ``ValueError``
    naming the file when a file lacks ``dataset``, ``model`` or ``accuracy``;
    ``FileNotFoundError`` for a missing path.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"trials file {path} does not exist")
        frame = pd.read_csv(path, keep_default_na=True)
        missing = [c for c in ("dataset", "model", "accuracy") if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        frames.append(frame)
    if not frames:
        raise ValueError("load_trials: no paths given")
    boolean_params = {
        column for frame in frames for column in frame.columns
        if column.startswith("param_") and not frame[column].dropna().empty
        and _looks_boolean(frame[column])
    }
    return _tidy(pd.concat(frames, ignore_index=True, sort=False), boolean_params=boolean_params)


# ----------------------------------------------------------------------------- helpers
def _prepare(trials: pd.DataFrame) -> pd.DataFrame:
    """Copy with ``source``/``sampler``/``state``/``chance``/flags filled in."""
    frame = _renamed_flags(trials.copy())
    if "source" not in frame.columns:
        frame["source"] = "ours"
    frame["source"] = frame["source"].fillna("ours")
    if "sampler" not in frame.columns:
        frame["sampler"] = ""
    if "state" not in frame.columns:
        frame["state"] = "COMPLETE"
    if "chance" not in frame.columns:
        if "n_classes" not in frame.columns:
            raise ValueError("trials need a 'chance' or an 'n_classes' column")
        frame["chance"] = 1.0 / frame["n_classes"].astype(float)
    for flag in FLAG_COLUMNS:
        frame[flag] = _to_bool(frame[flag], name=flag) if flag in frame.columns else False
    frame["accuracy"] = pd.to_numeric(frame["accuracy"], errors="coerce").astype(np.float64)
    frame["chance"] = frame["chance"].astype(np.float64)
    return frame

