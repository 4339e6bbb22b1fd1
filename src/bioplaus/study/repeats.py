"""The noise floor: re-evaluate fixed configurations with several seeds.

For each source configuration (the model's published default, and the best
configuration each sampler found) the evaluation is repeated ``repeats``
times, each repeat with a new fold split and a new model initialisation
(seeds derived from the study seed and the repeat index). The spread of
these repeats is the seed-to-seed noise that a single fit carries, to be set
beside the spread caused by hyperparameters.

Rows are appended to ``<out>.partial.csv`` as they finish, so a killed run
resumes without repeating finished (source, repeat) pairs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from bioplaus.models.registry import get_model
from bioplaus.study.evaluation import evaluate
from bioplaus.study.export import epoch_columns
from bioplaus.study.seeds import REPEAT, derive_seed


def repeat_seeds(seed: int, repeat: int) -> tuple[int, int]:
    """``(split_seed, init_seed)`` of noise-floor repeat ``repeat`` of a study seeded ``seed``."""
    return derive_seed(seed, REPEAT, repeat, 0), derive_seed(seed, REPEAT, repeat, 1)


def sources_from_best(best_files: Mapping[str, str | Path], model: str, options=None) -> dict[str, dict]:
    """``{"default": params, "best_<sampler>": params}`` from ``best.json`` files (keyed by sampler)."""
    spec = get_model(model)
    space = spec.search_space(options or {})
    sources: dict[str, dict] = {"default": {k: spec.default_params[k] for k in space if k in spec.default_params}}
    for sampler, path in best_files.items():
        rec = json.loads(Path(path).read_text())
        if rec.get("params"):
            sources[f"best_{sampler}"] = rec["params"]
    return sources


def run_repeats(
    *,
    dataset: str,
    model: str,
    sources: Mapping[str, Mapping[str, Any]],
    X: np.ndarray,
    y: np.ndarray,
    input_shape,
    repeats: int,
    seed: int,
    n_folds: int,
    epochs: int,
    options=None,
    time_limit=None,
    n_jobs: int = 1,
    out_csv: str | Path,
    log=print,
) -> pd.DataFrame:
    """Evaluate each source ``repeats`` times; write and return the ``repeats.csv`` frame."""
    out_csv = Path(out_csv)
    partial = out_csv.with_name(out_csv.name + ".partial.csv")
    done = pd.read_csv(partial) if partial.exists() and partial.stat().st_size else pd.DataFrame()
    keys = {s: json.dumps(dict(p), sort_keys=True, default=str) for s, p in sources.items()}
    # keep finished rows only where the source's configuration is still the same
    rows = [r for r in done.to_dict("records") if keys.get(r.get("source")) == r.get("params_json")]
    have = {(r["source"], int(r["repeat"])) for r in rows}
    for source, params in sources.items():
        for r in range(repeats):
            if (source, r) in have:
                continue
            t0 = time.perf_counter()
            split_seed, init_seed = repeat_seeds(seed, r)
            res = evaluate(
                model, params, X, y, input_shape=input_shape, n_folds=n_folds, epochs=epochs,
                split_seed=split_seed, init_seed=init_seed,
                options=options, time_limit=time_limit, n_jobs=n_jobs,
            )
            rec = res.as_record()
            row = {
                "dataset": dataset, "model": model, "source": source, "repeat": r,
                "seed": init_seed,
                "accuracy": math.nan if rec["accuracy"] is None else rec["accuracy"],
            }
            for k, a in enumerate(rec["fold_accuracies"]):
                row[f"accuracy_fold_{k + 1}"] = math.nan if a is None else a
            row.update(epoch_columns(rec, epochs))
            row.update({
                "fit_seconds": rec["fit_seconds"], "diverged": rec["diverged"],
                "censored": rec["censored"], "invalid": rec["invalid"], "error": rec["error"],
                "message": rec["message"], "chance": rec["chance"],
            })
            row["params_json"] = keys[source]
            for p, v in params.items():
                row[f"param_{p}"] = v
            rows.append(row)
            pd.DataFrame(rows).to_csv(partial, index=False)
            log(f"[{dataset}/{model}] repeat {r + 1}/{repeats} of {source}: accuracy {row['accuracy']:.4f} "
                f"in {time.perf_counter() - t0:.1f} s")
    frame = pd.DataFrame(rows)
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(out_csv)
    partial.unlink(missing_ok=True)
    return frame
