"""The optimisation studies: one persisted, resumable optuna study per (dataset, model, sampler).

This package owns everything between a prepared dataset and a study's
tables: the seeds (:mod:`~bioplaus.study.seeds`), the cross-validated
evaluation of one configuration (:mod:`~bioplaus.study.evaluation`), the
samplers (:mod:`~bioplaus.study.samplers`), the study's settings
(:mod:`~bioplaus.study.settings`) and storage (:mod:`~bioplaus.study.storage`),
the worker loop that any number of processes run on one study
(:mod:`~bioplaus.study.worker`) with its slot accounting
(:mod:`~bioplaus.study.slots`) and dead-worker recovery
(:mod:`~bioplaus.study.liveness`), the tables ``trials.csv``/``best.json``
(:mod:`~bioplaus.study.export`), the noise-floor repeats
(:mod:`~bioplaus.study.repeats`) and the alignment record per epoch
(:mod:`~bioplaus.study.alignment`). It uses the model registry
(:mod:`bioplaus.models.registry`) and :mod:`bioplaus.errors`, and knows
nothing of the command line or the analysis.
"""

from bioplaus.study.alignment import run_alignment, supports_alignment
from bioplaus.study.evaluation import EvaluationResult, FoldResult, evaluate, fold_splits, split_seed_for
from bioplaus.study.export import best_record, trials_frame, write_atomic, write_outputs
from bioplaus.study.liveness import HEARTBEAT_SECONDS, STALE_AFTER_SECONDS, check_liveness, recover_stale_trials
from bioplaus.study.repeats import run_repeats, sources_from_best
from bioplaus.study.samplers import (
    MODEL_BASED_SAMPLERS,
    SAMPLER_STREAMS,
    SAMPLERS,
    SkoptGPSampler,
    make_sampler,
    suggest_all,
)
from bioplaus.study.seeds import derive_seed
from bioplaus.study.settings import StudySettings
from bioplaus.study.slots import SlotPlan, plan_slots, requeue_orphans
from bioplaus.study.storage import open_storage, open_study
from bioplaus.study.worker import run_worker

__all__ = [
    "EvaluationResult", "FoldResult", "evaluate", "fold_splits", "split_seed_for",
    "best_record", "trials_frame", "write_atomic", "write_outputs",
    "HEARTBEAT_SECONDS", "STALE_AFTER_SECONDS", "check_liveness", "recover_stale_trials",
    "run_repeats", "sources_from_best", "run_alignment", "supports_alignment",
    "MODEL_BASED_SAMPLERS", "SAMPLER_STREAMS", "SAMPLERS", "SkoptGPSampler", "make_sampler", "suggest_all",
    "derive_seed",
    "StudySettings",
    "SlotPlan", "plan_slots", "requeue_orphans",
    "open_storage", "open_study",
    "run_worker",
]
