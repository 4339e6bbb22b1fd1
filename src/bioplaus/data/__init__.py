"""The data layer: which datasets exist, how their files are found, fetched, parsed and prepared.

The package owns every dataset fact (:mod:`~bioplaus.data.registry`: names,
labels, image shapes, sizes, canonical files and their checksums), the
canonical-format parsers (:mod:`~bioplaus.data.formats`: IDX and CIFAR-10
pickle batches), downloads with checksum verification
(:mod:`~bioplaus.data.download`), locating and loading a dataset as float32
``(X, y)`` (:mod:`~bioplaus.data.loading`) and the memory-mapped prepared
arrays the study jobs share (:mod:`~bioplaus.data.cache`). It depends on
nothing else in bioplaus but :mod:`bioplaus.errors`, and reads no settings
from the environment: the data folder is an argument (``data_dir``; None means
:data:`DEFAULT_DATA_DIR`). Note that ``bioplaus.data.download`` is the function
re-exported here; reach the module with ``from bioplaus.data.download import ...``.
"""

from bioplaus.data.cache import PreparedData, load_prepared, prepare
from bioplaus.data.download import download, verify_file
from bioplaus.data.formats import read_cifar10_batch, read_idx
from bioplaus.data.loading import load_dataset, locate_files, stratified_subsample_indices
from bioplaus.data.registry import (
    DATASETS,
    DEFAULT_DATA_DIR,
    DatasetInfo,
    RemoteFile,
    available_datasets,
    dataset_dir,
    dataset_info,
)

__all__ = [
    "DATASETS",
    "DEFAULT_DATA_DIR",
    "DatasetInfo",
    "PreparedData",
    "RemoteFile",
    "available_datasets",
    "dataset_dir",
    "dataset_info",
    "download",
    "load_dataset",
    "load_prepared",
    "locate_files",
    "prepare",
    "read_cifar10_batch",
    "read_idx",
    "stratified_subsample_indices",
    "verify_file",
]
