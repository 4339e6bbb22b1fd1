"""Loader of the 2019 reference study's Bayesian-optimisation logs.

The 2019 review logged one JSON object per line in
``bo_logs_<model>_<dataset>.json``::

    {"target": 0.97, "params": {"h_l_1": 192.0, "use_broadcast": 1.0, ...},
     "datetime": {"datetime": "2019-01-30 00:19:43", "elapsed": 36.2, "delta": 36.2}}

``target`` is the mean 3-fold cross-validated test accuracy (fraction in [0, 1]);
``params`` encodes integers and booleans as floats; ``datetime.delta`` is the
wall time of that evaluation in seconds (0 for the first line of a log,
where it is unknown: loaded as NaN).

:func:`load_reference_logs` turns them into rows shaped like the pipeline's
``trials.csv`` (see :mod:`bioplaus.analysis.loading`), so the same tables and figures
can be drawn for the 2019 study and for ours.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from bioplaus.errors import BioplausError

#: 2019 model names -> our registry names.
MODEL_NAMES = {"dnn": "mlp", "cnn": "cnn", "comp_dnn": "segdend"}

#: Parameters the 2019 search spaces declare as integers (logged as floats).
INT_PARAM_PATTERN = re.compile(
    r"^(num_layers|h_l_\d+|batch_size|ch_\d+|k_\d+|stride|padding|l_\w*phase\w*)$"
)
#: Parameters the 2019 search spaces declare as on/off switches (logged as 0.0/1.0).
BOOL_PARAM_PATTERN = re.compile(r"^(use_\w+|noisy_symmetric_weights|update_feedback_weights)$")

#: Sampler, seed and number of classes of the reference study (GP-UCB, seed 1, 10 classes).
REFERENCE_SAMPLER = "gp"
REFERENCE_SEED = 1
REFERENCE_N_CLASSES = 10

_FILE_PATTERN = re.compile(r"^bo_logs_(?P<stem>.+)\.json$")


class ReferenceLogError(BioplausError, ValueError):
    """A reference log folder is empty or a log line is malformed."""


def _split_stem(stem: str) -> tuple[str, str]:
    """``comp_dnn_mnist`` -> (``comp_dnn``, ``mnist``): the dataset is the last ``_`` field."""
    for prefix in sorted(MODEL_NAMES, key=len, reverse=True):
        if stem.startswith(prefix + "_") and len(stem) > len(prefix) + 1:
            return prefix, stem[len(prefix) + 1 :]
    if "_" not in stem:
        raise ReferenceLogError(f"cannot tell model from dataset in log name {stem!r}")
    model, dataset = stem.rsplit("_", 1)
    return model, dataset


def _parse_line(line: str, path: Path, line_number: int) -> tuple[float, dict, float]:
    """(target, params, delta seconds) of one log line; errors name file and line."""
    where = f"{path}, line {line_number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ReferenceLogError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(record, dict):
        raise ReferenceLogError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "target" not in record or "params" not in record:
        raise ReferenceLogError(f"{where}: missing 'target' or 'params'")
    params = record["params"]
    if not isinstance(params, dict):
        raise ReferenceLogError(f"{where}: 'params' is not an object")
    try:
        target = float(record["target"])
        params = {str(k): float(v) for k, v in params.items()}
    except (TypeError, ValueError) as exc:
        raise ReferenceLogError(f"{where}: non-numeric target or parameter ({exc})") from exc
    timing = record.get("datetime") or {}
    try:
        delta = float(timing.get("delta", np.nan)) if isinstance(timing, dict) else np.nan
    except (TypeError, ValueError) as exc:
        raise ReferenceLogError(f"{where}: non-numeric datetime.delta ({exc})") from exc
    return target, params, delta


def _cast_param_column(name: str, column: pd.Series) -> pd.Series:
    """Cast a float-encoded parameter column to int/bool where the 2019 space declares so."""
    complete = column.notna().all()
    if BOOL_PARAM_PATTERN.match(name):
        values = column != 0
        return values.astype(bool) if complete else values.where(column.notna()).astype("boolean")
    if INT_PARAM_PATTERN.match(name):
        rounded = column.round()
        return rounded.astype(np.int64) if complete else rounded.astype("Int64")
    return column.astype(np.float64)


def read_reference_log(path: str | Path) -> pd.DataFrame:
    """Rows (trials.csv columns, ``source="2019"``) of one ``bo_logs_<model>_<dataset>.json``."""
    path = Path(path)
    match = _FILE_PATTERN.match(path.name)
    if match is None:
        raise ReferenceLogError(f"{path}: not named bo_logs_<model>_<dataset>.json")
    model_2019, dataset = _split_stem(match.group("stem"))
    records = []
    with path.open("r", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            records.append(_parse_line(line, path, line_number))
    if not records:
        raise ReferenceLogError(f"{path}: log holds no evaluations")

    targets = np.array([r[0] for r in records], dtype=np.float64)
    n = len(records)
    durations = np.array([r[2] for r in records], dtype=np.float64)
    if durations[0] == 0.0:  # bayes_opt logs no duration for the first evaluation
        durations[0] = np.nan
    frame = pd.DataFrame(
        {
            "dataset": dataset,
            "model": MODEL_NAMES.get(model_2019, model_2019),
            "sampler": REFERENCE_SAMPLER,
            "source": "2019",
            "number": np.arange(n, dtype=np.int64),
            "state": "COMPLETE",
            "value": targets,
            "accuracy": targets,
            "fit_seconds": np.full(n, np.nan),
            "duration_seconds": durations,
            "diverged": False,
            "timed_out": False,
            "invalid": False,
            "message": "",
            "seed": REFERENCE_SEED,
            "n_classes": REFERENCE_N_CLASSES,
            "chance": 1.0 / REFERENCE_N_CLASSES,
        }
    )
    params = pd.DataFrame([r[1] for r in records])
    for name in sorted(params.columns):
        frame[f"param_{name}"] = _cast_param_column(name, params[name])
    return frame


def load_reference_logs(folder: str | Path) -> pd.DataFrame:
    """All ``bo_logs_<model>_<dataset>.json`` of ``folder`` as one trials-shaped DataFrame.

    One row per logged evaluation with the columns of the pipeline's
    ``trials.csv``: models renamed (``dnn`` -> ``mlp``, ``cnn`` -> ``cnn``,
    ``comp_dnn`` -> ``segdend``), ``sampler="gp"``, ``source="2019"``,
    ``number`` = line order (0-based, blank lines skipped), ``state="COMPLETE"``,
    ``accuracy = value = target``, ``duration_seconds`` = ``datetime.delta``
    (seconds; NaN for a first line logged as 0; ``fit_seconds`` is NaN: the
    logs do not separate it), ``seed = 1`` (the study's seed), ``n_classes = 10``,
    ``chance = 0.1``, ``param_<name>`` cast to int/bool where the 2019 space
    declares them so. Rows are sorted by (dataset, model, number).

    Raises :class:`ReferenceLogError` (a ``ValueError``) when the folder does not
    exist or holds no such file, or when a line is malformed (naming file and line).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ReferenceLogError(f"reference log folder {folder} does not exist")
    paths = sorted(folder.glob("bo_logs_*.json"))
    if not paths:
        raise ReferenceLogError(f"no bo_logs_<model>_<dataset>.json files in {folder}")
    frames = [read_reference_log(path) for path in paths]
    trials = pd.concat(frames, ignore_index=True, sort=False)
    fixed = [c for c in trials.columns if not c.startswith("param_")]
    params = sorted(c for c in trials.columns if c.startswith("param_"))
    trials = trials[fixed + params]
    # a param missing from some model's log (h_l_* exists for mlp, not cnn) becomes NA:
    # keep ints/bools as nullable dtypes instead of silently turning them into floats
    for column in params:
        name = column[len("param_") :]
        if trials[column].isna().any():
            if BOOL_PARAM_PATTERN.match(name):
                trials[column] = trials[column].astype("boolean")
            elif INT_PARAM_PATTERN.match(name):
                trials[column] = trials[column].astype("Int64")
    return trials.sort_values(["dataset", "model", "number"], ignore_index=True)
