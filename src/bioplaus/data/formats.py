"""Parsers of the canonical file formats, with their validation.

Owns reading LeCun's IDX format (gzip-compressed or plain; :func:`read_idx`)
and CIFAR-10's python pickle batches (:func:`read_cifar10_batch`) through a
restricted unpickler that builds only containers, numbers, strings and numpy
arrays and rejects any other global instead of executing it. Every fault
(truncated, damaged, wrong magic number, wrong counts, labels out of range) is
a :class:`bioplaus.errors.DatasetError` naming the file.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Mapping

import numpy as np

from bioplaus.errors import DatasetError


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(2) == b"\x1f\x8b"


# IDX type codes -> big-endian numpy dtypes (LeCun's IDX specification).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_exact(stream: BinaryIO, n_bytes: int) -> bytes:
    data = stream.read(n_bytes)
    return data if data is not None else b""


def _gzip_isize(path: Path) -> int:
    """The gzip trailer's ISIZE: uncompressed length mod 2**32 (single-member files)."""
    with open(path, "rb") as stream:
        stream.seek(-4, os.SEEK_END)
        return struct.unpack("<I", stream.read(4))[0]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file (gzip-compressed or plain; detected from its first bytes).

    Checks the magic number (two zero bytes, a known type code, the number of
    dimensions), and that the data length equals the product of the dimensions
    (no truncation, no trailing bytes). Returns a writable array of shape
    ``dims`` in native byte order (uint8 for the MNIST-family files).
    Raises DatasetError naming the file and the fault.
    """
    path = Path(path)
    try:
        compressed = _is_gzip(path)
        size_on_disk = path.stat().st_size
    except OSError as exc:
        raise DatasetError(f"Cannot read IDX file {path}: {exc.strerror or exc}.") from exc
    kind = "gzip-compressed IDX file" if compressed else "IDX file"
    try:
        opener = gzip.open if compressed else open
        with opener(path, "rb") as stream:
            head = _read_exact(stream, 4)
            if len(head) < 4:
                raise DatasetError(f"{kind} {path} is truncated: it holds {len(head)} bytes, "
                                   "fewer than the 4-byte IDX magic number.")
            if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES or not 1 <= head[3] <= 8:
                hint = " (it looks gzip-compressed twice)" if head[:2] == b"\x1f\x8b" else ""
                raise DatasetError(
                    f"{path} is not an IDX file: wrong magic number 0x{head.hex()}{hint}; "
                    "expected 0x0000 followed by a type code (0x08 uint8, 0x09 int8, 0x0B int16, "
                    "0x0C int32, 0x0D float32, 0x0E float64) and 1..8 dimensions."
                )
            dtype = _IDX_DTYPES[head[2]]
            ndim = head[3]
            raw_dims = _read_exact(stream, 4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DatasetError(f"{kind} {path} is truncated inside its header "
                                   f"({ndim} dimensions announced).")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            header_bytes = 4 + 4 * ndim
            n_values = int(np.prod(dims, dtype=np.int64))
            n_data = n_values * dtype.itemsize
            dims_text = "x".join(str(d) for d in dims)
            # Check the length before allocating, so a damaged header cannot
            # make us allocate gigabytes.
            if compressed:
                # ISIZE is the uncompressed length mod 2**32 of a single-member
                # gzip file, which the canonical files are.
                isize = _gzip_isize(path)
                if isize != (header_bytes + n_data) % (1 << 32):
                    raise DatasetError(
                        f"{kind} {path} is truncated or its counts are wrong: the header announces "
                        f"{dims_text} {dtype.name} values ({n_data} bytes of data) but the gzip "
                        f"trailer records {isize} uncompressed bytes in all "
                        f"(expected {header_bytes + n_data})."
                    )
            elif size_on_disk != header_bytes + n_data:
                verb = "is truncated" if size_on_disk < header_bytes + n_data else "has trailing bytes"
                raise DatasetError(
                    f"{kind} {path} {verb}: the header announces {dims_text} {dtype.name} values "
                    f"({n_data} bytes of data after the {header_bytes}-byte header) but the file "
                    f"holds {size_on_disk - header_bytes}."
                )
            out = np.empty(n_values, dtype=dtype)
            view = memoryview(out).cast("B")
            got = 0
            while got < n_data:
                n_read = stream.readinto(view[got:])
                if not n_read:
                    break
                got += n_read
            if got < n_data:
                raise DatasetError(
                    f"{kind} {path} is truncated: the header announces {dims_text} {dtype.name} "
                    f"values ({n_data} bytes) but only {got} bytes follow the header."
                )
            if _read_exact(stream, 1):
                raise DatasetError(
                    f"{kind} {path} has trailing bytes after the {dims_text} {dtype.name} values "
                    "its header announces (wrong counts in the header?)."
                )
    except DatasetError:
        raise
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
        what = "is not a readable gzip file" if compressed else "cannot be read"
        raise DatasetError(
            f"{path} {what} ({type(exc).__name__}: {exc}); it is damaged or truncated. "
            "Delete it and download it again."
        ) from exc
    out = out.reshape(dims)
    if not out.dtype.isnative:
        out = out.astype(out.dtype.newbyteorder("="))
    return out


def _reconstruct_function():
    """numpy's array-unpickling helper (its module moved between numpy 1 and 2)."""
    return np.ndarray((0,), np.uint8).__reduce__()[0]


def _frombuffer_function():
    """numpy's protocol-5 array-unpickling helper (builds an array from raw bytes)."""
    return np.zeros(1, np.uint8).__reduce_ex__(5)[0]


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles of ``bytes`` use it."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"encoding {encoding!r} is not allowed")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can build only dicts, lists, strings, numbers and numpy arrays."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct_function,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct_function,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer_function,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer_function,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("_codecs", "encode"): lambda: _latin1_encode,
    }

    def find_class(self, module: str, name: str):
        factory = self._ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")
        return factory()


def _get(batch: Mapping, key: str):
    if key.encode() in batch:
        return batch[key.encode()]
    if key in batch:
        return batch[key]
    raise KeyError(key)


def read_cifar10_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Parse one CIFAR-10 python batch (a pickled dict with ``b"data"``, ``b"labels"``).

    Unpickles with a restricted unpickler (only builtins containers and numpy
    arrays; a pickle naming any other global is rejected, never executed).
    Returns ``X`` uint8 of shape ``(n, 3, 32, 32)`` (channel planes R, G, B,
    rows top to bottom) and ``y`` int64 of shape ``(n,)`` in 0..9.
    Raises DatasetError naming the file and the fault.
    """
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            batch = _RestrictedUnpickler(stream, encoding="bytes").load()
    except OSError as exc:
        raise DatasetError(f"Cannot read CIFAR-10 batch {path}: {exc.strerror or exc}.") from exc
    except Exception as exc:  # any unpickling fault: truncated, garbage, forbidden global
        raise DatasetError(
            f"{path} is not a valid CIFAR-10 python batch: unpickling failed "
            f"({type(exc).__name__}: {exc}). The file is damaged, truncated or not a CIFAR-10 "
            "batch; delete it and download it again."
        ) from exc
    if not isinstance(batch, dict):
        raise DatasetError(f"{path} is not a CIFAR-10 python batch: it holds a "
                           f"{type(batch).__name__}, not a dict.")
    try:
        data = _get(batch, "data")
        labels = _get(batch, "labels")
    except KeyError as exc:
        raise DatasetError(f"{path} is not a CIFAR-10 python batch: key b'{exc.args[0]}' is "
                           f"missing (keys: {sorted(map(repr, batch))}).") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DatasetError(f"{path}: b'data' must be a uint8 array of shape (n, 3072); found {desc}.")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DatasetError(f"{path}: b'labels' is not a list of integers ({exc}).") from exc
    if y.ndim != 1 or y.shape[0] != data.shape[0]:
        raise DatasetError(f"{path}: {data.shape[0]} images but labels of shape {y.shape}; "
                           "image and label counts must match.")
    _check_label_range(y, 10, path)
    X = np.ascontiguousarray(data).reshape(data.shape[0], 3, 32, 32)
    return X, y


def _check_label_range(y: np.ndarray, n_classes: int, path) -> None:
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        bad = y[(y < 0) | (y >= n_classes)]
        raise DatasetError(
            f"{path}: labels out of range: found {bad.size} label(s) outside 0..{n_classes - 1} "
            f"(e.g. {int(bad[0])})."
        )

