"""The settings of one study: what determines its numbers, its name, and its bounds.

:class:`StudySettings` is stored with the study (its :meth:`~StudySettings.fingerprint`)
so that a study is never resumed with other ones. It checks its values when
made (:class:`~bioplaus.errors.ConfigError` naming the config key), so that a
study that cannot run stops before its first trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bioplaus.errors import ConfigError
from bioplaus.study.slots import MAX_CONSECUTIVE_INVALID, MAX_RETRIES

#: (attribute, config key, command-line option, smallest allowed value) of the integer settings
_INTEGER_BOUNDS = (
    ("n_trials", "n_trials", "--n-trials", 1),
    ("n_folds", "n_folds", "--folds", 2),
    ("epochs", "epochs", "--epochs", 1),
    ("n_initial_points", "n_initial_points", "--n-initial-points", 1),
    ("max_retries", "max_retries", "--max-retries", 1),
    ("max_consecutive_invalid", "max_consecutive_invalid", "--max-consecutive-invalid", 1),
)


@dataclass
class StudySettings:
    """Everything that determines a study's numbers (stored with the study), and its bounds.

    ``n_trials``: valid COMPLETE trials the study ends with (invalid points are
    evaluated, stored and told to the sampler, but do not count).
    ``max_retries``: a configuration whose worker died this many times is
    retired, and the study stops after this many evaluation errors in a row.
    ``max_consecutive_invalid``: the study stops when this many configurations
    in a row were invalid or failed. Neither bound changes the numbers of a
    study that ends, so neither is part of the fingerprint.
    """

    dataset: str
    model: str
    sampler: str
    n_trials: int
    n_folds: int = 3
    epochs: int = 10
    seed: int = 1
    time_limit: float | None = None
    options: dict = field(default_factory=dict)
    n_initial_points: int = 5
    kappa: float = 2.5
    data_fingerprint: str = ""
    max_retries: int = MAX_RETRIES
    max_consecutive_invalid: int = MAX_CONSECUTIVE_INVALID

    def __post_init__(self) -> None:
        for attr, key, option, low in _INTEGER_BOUNDS:
            val = getattr(self, attr)
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ConfigError(f"{key}={val!r}: must be an integer of at least {low} "
                                  f"(config key `{key}`, option {option})")
        if self.seed is None or isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r}: must be a non-negative integer (config key `seed`, option --seed)")
        if self.time_limit is not None and not (self.time_limit > 0 and math.isfinite(self.time_limit)):
            raise ConfigError(f"time_limit={self.time_limit!r}: must be a positive number of CPU seconds "
                              "(config key `time_limit`, option --time-limit)")
        if not (self.kappa >= 0 and math.isfinite(self.kappa)):
            raise ConfigError(f"kappa={self.kappa!r}: must be a non-negative number (config key `kappa`, option --kappa)")

    @property
    def study_name(self) -> str:
        return f"{self.dataset}/{self.model}/{self.sampler}"

    def fingerprint(self) -> dict[str, Any]:
        """Settings that must not change while a study is resumed (``n_trials`` may grow)."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "sampler": self.sampler,
            "n_folds": self.n_folds,
            "epochs": self.epochs,
            "seed": self.seed,
            "time_limit": self.time_limit,
            "options": self.options,
            "n_initial_points": self.n_initial_points,
            "kappa": self.kappa,
            "data": self.data_fingerprint,
        }


def data_fingerprint(meta: dict) -> str:
    """The prepared dataset's part of a study's fingerprint, from its ``meta.json``."""
    return f"{meta.get('name')}:n={meta.get('n')}:max_samples={meta.get('max_samples')}:seed={meta.get('seed')}"
