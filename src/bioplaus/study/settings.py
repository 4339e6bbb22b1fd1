"""The settings of one study: what determines its numbers, and its name.

:class:`StudySettings` is stored with the study (its :meth:`~StudySettings.fingerprint`)
so that a study is never resumed with other settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StudySettings:
    """Everything that determines a study's numbers (stored with the study)."""

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
