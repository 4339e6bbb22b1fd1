"""Tests of bioplaus.data.cache: a prepared dataset round-trips and damage is a clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bioplaus.data import DATASETS, load_dataset, load_prepared, prepare
from bioplaus.errors import DatasetError


def test_prepare_stores_what_load_dataset_returns_and_load_prepared_memory_maps_it(tmp_path):
    folder = prepare("digits", tmp_path / "digits", max_samples=300, seed=3)
    X, y = load_dataset("digits", max_samples=300, seed=3)
    data = load_prepared(folder)
    assert isinstance(data.X, np.memmap) and not data.X.flags.writeable
    np.testing.assert_array_equal(data.X, X.reshape(300, -1))
    np.testing.assert_array_equal(data.y, y)
    assert data.input_shape == (1, 8, 8) and data.name == "digits" and data.n_classes == 10
    assert (folder / "X.npy").stat().st_size - data.X.offset == DATASETS["digits"].prepared_nbytes(300)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["n"] == 300 and meta["max_samples"] == 300 and meta["seed"] == 3
    assert not list(folder.glob("*.tmp"))


def test_load_prepared_missing_corrupt_or_inconsistent_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="run `bioplaus prepare`"):
        load_prepared(tmp_path / "nothing")
    folder = prepare("digits", tmp_path / "digits", max_samples=100)
    (folder / "X.npy").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="corrupt"):
        load_prepared(folder)
    np.save(folder / "X.npy", np.zeros((100, 63), dtype=np.float32))
    with pytest.raises(DatasetError, match="inconsistent"):
        load_prepared(folder)
