"""Shared fixtures: small datasets, fake models with controllable failures."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from sklearn.base import BaseEstimator, ClassifierMixin

from bioplaus.errors import InvalidConfigurationError
from bioplaus.models.registry import ModelSpec, register

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


class NearestMeanClassifier(ClassifierMixin, BaseEstimator):
    """A tiny incremental classifier whose failures are set by ``mode``:
    ``ok``, ``invalid`` (raises InvalidConfigurationError), ``diverge`` (sets
    ``diverged_`` once more than ``diverge_after`` rows were seen: after the first chunk by
    default), ``slow`` (burns CPU per chunk), ``error`` (raises RuntimeError), ``nan`` (raises
    FloatingPointError)."""

    def __init__(self, mode="ok", shrink=1.0, batch_size=1, sleep=0.05, diverge_after=0):
        self.mode = mode
        self.shrink = shrink
        self.batch_size = batch_size
        self.sleep = sleep
        self.diverge_after = diverge_after

    def partial_fit(self, X, y, classes=None):
        if self.mode == "invalid":
            raise InvalidConfigurationError("mode 'invalid' cannot be run (shrink and mode clash)")
        if self.mode == "error":
            raise RuntimeError("boom from the fake model")
        if self.mode == "nan":
            raise FloatingPointError("overflow encountered in exp")
        if not hasattr(self, "classes_"):
            self.classes_ = np.asarray(classes)
            self.sums_ = np.zeros((len(self.classes_), X.shape[1]))
            self.counts_ = np.zeros(len(self.classes_))
            self.chunks_ = []
        self.chunks_.append(len(X))
        for i, c in enumerate(self.classes_):
            m = y == c
            self.sums_[i] += X[m].sum(0)
            self.counts_[i] += m.sum()
        if self.mode == "diverge" and self.counts_.sum() > self.diverge_after:
            self.diverged_ = True
        if self.mode == "slow":  # burn CPU: time limits count CPU seconds
            end = time.process_time() + self.sleep
            while time.process_time() < end:
                pass
        return self

    def predict(self, X):
        if getattr(self, "diverged_", False):
            return np.full(len(X), self.classes_[0])
        means = self.shrink * self.sums_ / np.maximum(self.counts_, 1)[:, None]
        d = ((X[:, None, :] - means[None]) ** 2).sum(-1)
        return self.classes_[np.argmin(d, axis=1)]


def _fake_build(params, *, input_shape, n_classes, epochs, random_state, options):
    return NearestMeanClassifier(mode=params["mode"], shrink=params["shrink"],
                                 batch_size=int(options.get("batch_size", 1)),
                                 sleep=float(options.get("sleep", 0.05)),
                                 diverge_after=int(options.get("diverge_after", 0)))


FAKE = register(ModelSpec(
    name="fake",
    label="Fake nearest-mean",
    build=_fake_build,
    search_space=lambda options=None: {
        "mode": CategoricalDistribution(["ok", "invalid"]),
        "shrink": FloatDistribution(0.5, 1.5),
    },
    default_params={"mode": "ok", "shrink": 1.0},
))


@pytest.fixture(scope="session")
def digits():
    """Flat digits (1797, 64) float32 in [0, 1] and labels."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16).astype(np.float32), y.astype(np.int64)


@pytest.fixture()
def prepared_digits(tmp_path, digits):
    """A prepared (memory-mappable) copy of 600 digits, as `bioplaus prepare` writes it."""
    from bioplaus.data import prepare

    return prepare("digits", tmp_path / "data" / "digits", max_samples=600, seed=0)
