"""Transfer: the best configuration found on one dataset, refitted on each other dataset.

Owns :func:`best_configuration` (the best of a dataset's ``best.json`` files)
and :func:`run_transfer`, which evaluates, on one target dataset, the best
configuration of every other dataset with ``repeats`` seeds, through the
noise-floor machinery (:func:`bioplaus.study.repeats.run_repeats`: the same
seeds, fold splits and resumable ``<out>.partial.csv`` as ``repeats.csv``, so a
transferred configuration is compared with the target's own best on equal
terms). The rows are those of ``repeats.csv`` plus ``source_dataset``,
``source_sampler`` and ``source_accuracy`` (the configuration's accuracy on its
own dataset); ``source`` is ``from_<dataset>``. The regret table is computed by
:func:`bioplaus.analysis.transfer.transfer_table`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from bioplaus.study.export import write_atomic
from bioplaus.study.repeats import run_repeats

#: prefix of the ``source`` of a transferred configuration
TRANSFER_PREFIX = "from_"
#: columns added to the repeats rows
TRANSFER_COLUMNS = ["source_dataset", "source_sampler", "source_accuracy"]


def best_configuration(best_files: Mapping[str, str | Path]) -> tuple[str, dict[str, Any], float] | None:
    """``(sampler, params, accuracy)`` of the most accurate of ``{sampler: best.json}``; None if none has one.

    Ties go to the first sampler in the mapping's order.
    """
    best = None
    for sampler, path in best_files.items():
        record = json.loads(Path(path).read_text())
        if not record.get("params") or record.get("accuracy") is None:
            continue
        if best is None or float(record["accuracy"]) > best[2]:
            best = (str(sampler), dict(record["params"]), float(record["accuracy"]))
    return best


def run_transfer(
    *,
    target: str,
    model: str,
    best_by_dataset: Mapping[str, Mapping[str, str | Path]],
    X: np.ndarray,
    y: np.ndarray,
    input_shape,
    repeats: int,
    seed: int,
    n_folds: int,
    epochs: int,
    out_csv: str | Path,
    options=None,
    time_limit=None,
    n_jobs: int = 1,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Evaluate each other dataset's best configuration on ``target``; write and return the rows.

    Parameters
    ----------
    target : str
        Name of the dataset ``X``, ``y`` hold (the ``dataset`` column).
    best_by_dataset : mapping
        ``{dataset: {sampler: path of best.json}}``; ``target``'s own entry is skipped.
    repeats, seed, n_folds, epochs, options, time_limit, n_jobs :
        As for :func:`~bioplaus.study.repeats.run_repeats`.
    out_csv : path
        Written atomically; an empty table (header only) when no other dataset has a best configuration.
    """
    sources, origin = {}, {}
    for dataset, files in best_by_dataset.items():
        if dataset == target:
            continue
        best = best_configuration(files)
        if best is None:
            log(f"[{target}/{model}] no best configuration of {dataset}: skipped")
            continue
        name = f"{TRANSFER_PREFIX}{dataset}"
        sources[name] = best[1]
        origin[name] = (dataset, best[0], best[2])
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    if not sources:
        frame = pd.DataFrame(columns=["dataset", "model", "source", "repeat", "accuracy", *TRANSFER_COLUMNS])
        write_atomic(out_csv, frame.to_csv(index=False))
        return frame
    frame = run_repeats(dataset=target, model=model, sources=sources, X=X, y=y, input_shape=input_shape,
                        repeats=repeats, seed=seed, n_folds=n_folds, epochs=epochs, options=options,
                        time_limit=time_limit, n_jobs=n_jobs, out_csv=out_csv, log=log)
    for k, column in enumerate(TRANSFER_COLUMNS):
        frame[column] = frame["source"].map(lambda s, k=k: origin[s][k])
    write_atomic(out_csv, frame.to_csv(index=False))
    return frame
