"""A dataset prepared once per study, stored as ``.npy`` files and memory-mapped.

Owns the prepared-data folder: ``prepare`` writes ``X.npy`` (float32, flat
``(n, c*h*w)`` in [0, 1]), ``y.npy`` (int64) and ``meta.json`` (shape,
classes, provenance) into a folder; ``load_prepared`` memory-maps them
read-only, so every study job and every fold worker of that job reads the
same pages instead of holding a copy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bioplaus.data.loading import load_dataset
from bioplaus.errors import DatasetError


@dataclass(frozen=True)
class PreparedData:
    X: np.ndarray  #: flat images (n, c*h*w) float32 in [0, 1], memory-mapped
    y: np.ndarray  #: labels (n,) int64
    input_shape: tuple[int, int, int]  #: (channels, height, width)
    name: str

    @property
    def n_classes(self) -> int:
        return int(len(np.unique(self.y)))


def prepare(name: str, out_dir: str | os.PathLike, *, data_dir=None, max_samples=None, seed: int = 0) -> Path:
    """Load dataset ``name`` (see :mod:`bioplaus.data.loading`) and store it under ``out_dir``."""
    X, y = load_dataset(name, data_dir=data_dir, max_samples=max_samples, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in X.shape[1:])
    for fname, arr in (("X.npy", X.reshape(len(X), -1)), ("y.npy", np.asarray(y, dtype=np.int64))):
        tmp = out / (fname + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr))
        os.replace(tmp, out / fname)
    meta = {
        "name": name,
        "n": int(len(y)),
        "input_shape": list(shape),
        "classes": [int(c) for c in np.unique(y)],
        "class_counts": [int(c) for c in np.bincount(y)],
        "max_samples": max_samples,
        "seed": seed,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_prepared(folder: str | os.PathLike) -> PreparedData:
    """Memory-map a folder written by :func:`prepare`."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        X = np.load(folder / "X.npy", mmap_mode="r")
        y = np.asarray(np.load(folder / "y.npy"), dtype=np.int64)
    except FileNotFoundError as exc:
        raise DatasetError(
            f"prepared dataset missing in {folder} ({exc.filename}); run "
            f"`bioplaus prepare` (Snakemake's `prepare_data` rule) first"
        ) from exc
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"prepared dataset in {folder} is corrupt ({exc}); delete the folder and prepare it again") from exc
    shape = tuple(int(s) for s in meta["input_shape"])
    if X.ndim != 2 or X.shape[0] != len(y) or X.shape[1] != int(np.prod(shape)) or X.dtype != np.float32:
        raise DatasetError(
            f"prepared dataset in {folder} is inconsistent: X {X.shape} {X.dtype}, y {y.shape}, "
            f"declared shape {shape}; delete the folder and prepare it again"
        )
    return PreparedData(X=X, y=y, input_shape=shape, name=str(meta.get("name", folder.name)))
