"""Tests of bioplaus.data.formats: the IDX and CIFAR-10 batch parsers.

Parsers are checked on tiny files written here in exactly the canonical
formats (IDX with a big-endian header, gzip; CIFAR-10 python pickles written
the way Python 2's cPickle wrote the published batches).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from bioplaus.data import read_cifar10_batch, read_idx
from bioplaus.errors import DatasetError
from datafiles import cifar_py2_pickle, idx_bytes, random_cifar, write_idx


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
