"""Writers of tiny dataset files in the canonical formats, shared by the data-layer tests.

IDX files with a big-endian header (optionally gzip-compressed), CIFAR-10
python pickles written the way Python 2's cPickle wrote the published batches,
and a tiny MNIST-like registry entry. Fashion-MNIST tests use the real Debian
files when installed (``needs_debian_fashion``).
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from bioplaus.data import DatasetInfo, RemoteFile

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")

needs_debian_fashion = pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(),
    reason=f"Debian Fashion-MNIST files not installed ({DEBIAN_FASHION}; apt-get install dataset-fashion-mnist)",
)


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
