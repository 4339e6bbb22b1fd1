"""A model plugin for subprocess tests (``--plugin slow_fake_plugin``, tests/ on PYTHONPATH):
a nearest-mean classifier that is slow enough to be killed mid-trial, with an invalid half
of its space. Deterministic: same configuration, same accuracy."""

import time

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution
from sklearn.base import BaseEstimator, ClassifierMixin

from bioplaus.errors import InvalidConfigurationError
from bioplaus.models.registry import ModelSpec


class SlowNearestMean(ClassifierMixin, BaseEstimator):
    """Nearest class mean scaled by ``shrink``; ``mode='invalid'`` cannot run; ``pause`` wall s per chunk."""

    def __init__(self, mode="ok", shrink=1.0, pause=0.05):
        self.mode = mode
        self.shrink = shrink
        self.pause = pause

    def partial_fit(self, X, y, classes=None):
        if self.mode == "invalid":
            raise InvalidConfigurationError("mode 'invalid' cannot be run")
        if not hasattr(self, "classes_"):
            self.classes_ = np.asarray(classes)
            self.sums_ = np.zeros((len(self.classes_), X.shape[1]))
            self.counts_ = np.zeros(len(self.classes_))
        for i, c in enumerate(self.classes_):
            m = y == c
            self.sums_[i] += X[m].sum(0)
            self.counts_[i] += m.sum()
        time.sleep(self.pause)
        return self

    def predict(self, X):
        means = self.shrink * self.sums_ / np.maximum(self.counts_, 1)[:, None]
        return self.classes_[np.argmin(((X[:, None, :] - means[None]) ** 2).sum(-1), axis=1)]


def _build(params, *, input_shape, n_classes, epochs, random_state, options=None):
    return SlowNearestMean(mode=params["mode"], shrink=params["shrink"])


SPEC = ModelSpec(
    name="slowfake", label="Slow fake nearest-mean", build=_build,
    search_space=lambda options=None: {"mode": CategoricalDistribution(["ok", "invalid"]),
                                       "shrink": FloatDistribution(0.2, 1.5)},
    default_params={"mode": "ok", "shrink": 1.0},
)
