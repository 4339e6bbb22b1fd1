"""Tests of bioplaus.data.registry: the registry's entries are complete and consistent."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bioplaus
from bioplaus.data import (
    DATASETS,
    DEFAULT_DATA_DIR,
    available_datasets,
    dataset_dir,
    dataset_info,
    load_dataset,
    locate_files,
)
from bioplaus.errors import ConfigError
from datafiles import DEBIAN_FASHION


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


def test_prepared_nbytes_is_images_times_pixels_times_four_bytes():
    assert DATASETS["digits"].prepared_nbytes() == 1797 * 64 * 4
    assert DATASETS["mnist"].prepared_nbytes() == 70000 * 784 * 4
    assert DATASETS["cifar10"].prepared_nbytes() == 60000 * 3 * 32 * 32 * 4
    assert DATASETS["fashion"].prepared_nbytes(max_samples=1000) == 1000 * 784 * 4
    assert DATASETS["mnist-5k"].prepared_nbytes(max_samples=10**6) == DATASETS["mnist-5k"].prepared_nbytes()


def test_data_dir_is_an_argument_not_an_environment_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOPLAUS_DATA_DIR", str(tmp_path / "elsewhere"))
    assert dataset_dir("mnist") == DEFAULT_DATA_DIR.absolute() / "mnist"
    assert dataset_dir("mnist", tmp_path) == tmp_path.absolute() / "mnist"


def test_data_layer_imports_nothing_above_it():
    code = ("import sys, bioplaus.data; "
            "print(sorted(m for m in sys.modules if m.startswith('bioplaus.') and not m.startswith('bioplaus.data')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(Path(bioplaus.__file__).parents[1])})
    assert result.stdout.strip() == "['bioplaus.errors']"
