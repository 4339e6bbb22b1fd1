"""The worker loop: run trials of one study until it holds ``n_trials`` COMPLETE trials.

Each worker runs :func:`run_worker`, a loop "recover dead workers' trials →
stop if the study holds ``n_trials`` COMPLETE trials → ask → admit or skip →
evaluate → tell". Any number of workers, started at any time, on any host,
share one study; the slot rules of :mod:`bioplaus.study.slots` make it end
with exactly ``n_trials`` COMPLETE trials, and :mod:`bioplaus.study.liveness`
finds the trials of workers that died. A trial's seeds (model initialisation,
shuffling, and the sampler's draw) derive from the study seed and the trial
number (origin) only (see :mod:`bioplaus.study.seeds`): with the ``random``
sampler, trial ``k`` evaluates the same configuration with the same seed
whether 1 or 10 workers ran the study.

With a model-based sampler (``gp``, ``tpe``) a worker asking while others
evaluate sees their configurations as pending points (constant liar). Optuna
writes a trial's parameters only after the sampler has chosen them, so two
workers asking at the same moment could still pick the same point: after
writing its parameters each trial looks for an identical configuration that
its sampler could not have known (running, or completed since the ask) and, if
there is one, is skipped and asks again (after a random pause). Of two
simultaneous duplicates at most one is evaluated (each writes before it
reads, so the later reader sees the other).
"""

from __future__ import annotations

import math
import random
import time
import warnings
from typing import Callable

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from bioplaus.models.registry import get_model
from bioplaus.study._log import log as _log
from bioplaus.study.evaluation import evaluate, split_seed_for
from bioplaus.study.liveness import (
    HEARTBEAT_SECONDS,
    STALE_AFTER_SECONDS,
    Heartbeat,
    check_liveness,
    recover_stale_trials,
    worker_id,
)
from bioplaus.study.samplers import MODEL_BASED_SAMPLERS, suggest_all
from bioplaus.study.seeds import INIT, derive_seed
from bioplaus.study.settings import StudySettings
from bioplaus.study.slots import concurrent_duplicate, plan_slots, requeue_orphans, skip, skip_reason
from bioplaus.study.storage import open_study


def _run_trial(study, trial, settings, space, X, y, input_shape, split_seed, n_jobs,
               known_complete: set[int] | None) -> str | None:
    """Admit, evaluate and tell one asked trial. Returns the status line, None if the
    trial was skipped, or ``"duplicate …"`` if it was skipped as a concurrent duplicate.
    ``known_complete``: COMPLETE trials before the ask (None: no duplicate check)."""
    origin = int(trial.user_attrs.get("origin", trial.number))
    reason = skip_reason(trial.number, origin, study.get_trials(deepcopy=False), settings.n_trials)
    if reason is not None:
        skip(study, trial, reason)
        return None
    trial.set_user_attr("origin", origin)
    params = suggest_all(trial, space)
    if known_complete is not None and origin == trial.number:
        dup = concurrent_duplicate(trial.number, params, study.get_trials(deepcopy=False), known_complete)
        if dup is not None:
            reason = f"duplicate: same configuration as trial {dup}, asked concurrently"
            skip(study, trial, reason)
            return reason
    seed = derive_seed(settings.seed, INIT, origin)
    trial.set_user_attr("seed", seed)
    t0 = time.perf_counter()
    result = evaluate(
        settings.model, params, X, y,
        input_shape=input_shape, n_folds=settings.n_folds, epochs=settings.epochs,
        split_seed=split_seed, init_seed=seed, options=settings.options,
        time_limit=settings.time_limit, n_jobs=n_jobs,
    )
    wall = time.perf_counter() - t0
    for key, val in result.as_record().items():
        trial.set_user_attr(key, val)
    trial.set_user_attr("duration_seconds", wall)
    if result.error:
        study.tell(trial, state=TrialState.FAIL)
        return f"FAILED ({result.message})"
    study.tell(trial, result.objective())
    flags = [f for f in ("invalid", "diverged", "timed_out") if getattr(result, f)]
    acc = "n/a" if math.isnan(result.accuracy) else f"{result.accuracy:.4f}"
    return f"accuracy {acc}" + (f" [{', '.join(flags)}]" if flags else "")


def run_worker(
    settings: StudySettings,
    storage,
    X: np.ndarray,
    y: np.ndarray,
    input_shape: tuple[int, int, int],
    *,
    n_jobs: int = 1,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
    stale_after: float = STALE_AFTER_SECONDS,
    poll_seconds: float | None = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
) -> optuna.Study:
    """Run trials of one study until it holds ``settings.n_trials`` COMPLETE trials.

    ``X`` flat ``(n, c*h*w)`` float32 (a memory map is shared with the fold
    workers), ``y`` int labels. ``n_jobs``: processes/threads for the folds.
    ``heartbeat_seconds``/``stale_after`` (seconds): see
    :mod:`bioplaus.study.liveness` (default :data:`HEARTBEAT_SECONDS` and
    :data:`STALE_AFTER_SECONDS`, 20 and 120). ``poll_seconds``: pause while the
    last trials run in other workers (default ``min(2, stale_after / 4)``).
    Progress is logged one line per trial on stderr.
    """
    hb, stale = check_liveness(heartbeat_seconds, stale_after)
    poll = min(2.0, stale / 4) if poll_seconds is None else float(poll_seconds)
    study = open_study(settings, storage)
    spec = get_model(settings.model)
    space = spec.search_space(settings.options)
    split_seed = split_seed_for(settings.seed)
    name = settings.study_name
    check_duplicates = settings.sampler in MODEL_BASED_SAMPLERS
    retries = 0
    while True:
        recover_stale_trials(study, stale)
        trials = study.get_trials(deepcopy=False)
        plan = plan_slots(trials, settings.n_trials)
        if plan.complete >= settings.n_trials:
            break
        if plan.orphans:
            requeue_orphans(study, settings.n_trials, trials)
            continue
        if len(plan.slots) >= settings.n_trials and plan.waiting == 0:
            time.sleep(poll)  # the last trials run elsewhere; wait for them (or their death)
            continue
        known_complete = {t.number for t in trials if t.state == TrialState.COMPLETE}
        with warnings.catch_warnings():  # optuna warns that its heartbeat is meant for optimize()
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        trial.set_user_attr("worker", worker_id())
        t0 = time.perf_counter()
        try:
            # the heartbeat covers the whole trial, the sampler's choice included
            # (optuna samples lazily, at the first suggest: a GP fit can take seconds)
            with Heartbeat(study, trial, hb):
                status = _run_trial(study, trial, settings, space, X, y, input_shape, split_seed, n_jobs,
                                    known_complete if check_duplicates else None)
        except UpdateFinishedTrialError:
            _log(f"[{name}] trial {trial.number}: another worker declared this worker dead (heartbeat late) "
                 f"and failed the trial; its result ({time.perf_counter() - t0:.1f} s) is discarded, "
                 "the configuration was re-queued")
            continue
        wall = time.perf_counter() - t0
        if status is None:  # skipped: not evaluated
            continue
        if status.startswith("duplicate"):
            retries += 1
            _log(f"[{name}] trial {trial.number}: {status}: asking again")
            time.sleep(random.uniform(0, min(5.0, 0.5 * retries)))  # break the lockstep of simultaneous asks
            continue
        retries = 0
        plan = plan_slots(study.get_trials(deepcopy=False), settings.n_trials)
        try:
            best = f"; best {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = ""
        _log(f"[{name}] trial {trial.number}: {status} in {wall:.1f} s; "
             f"{plan.complete}/{settings.n_trials} done{best}")
        if on_trial is not None:
            on_trial(study.get_trials(deepcopy=False)[trial.number])
    return study
