"""The worker loop: run trials of one study until it holds ``n_trials`` valid COMPLETE trials.

Each worker runs :func:`run_worker`, a loop "recover dead workers' trials →
stop if the study holds ``n_trials`` valid COMPLETE trials (or must give up)
→ ask → admit or skip → evaluate → tell". Any number of workers, started at
any time, on any host, share one study; the slot rules of
:mod:`bioplaus.study.slots` make it end with exactly ``n_trials`` valid
COMPLETE trials (invalid ones are stored and told but do not count), and
:mod:`bioplaus.study.liveness` finds the trials of workers that died. A
trial's seeds (model initialisation, shuffling, and the sampler's draw)
derive from the study seed and its draw index only (see
:mod:`bioplaus.study.seeds` and :func:`~bioplaus.study.slots.draw_index`):
with the ``random`` sampler, the ``k``-th draw evaluates the same
configuration with the same seed whether 1 or 10 workers ran the study, and
whether or not it was killed and resumed.

No study can loop: before the first trial the settings, the model's options
and the folds are checked (:class:`~bioplaus.errors.ConfigError`); an error
that will recur for every configuration (the model cannot be built, a bad
option reached ``fit``) stops the study at once with one line naming it; a
configuration whose worker keeps dying is retired after ``max_retries``
deaths; and the study stops with a message when ``max_retries`` evaluations
in a row fail, or ``max_consecutive_invalid`` in a row are invalid
(:func:`~bioplaus.study.slots.stop_reason`). A storage that cannot be
reached is retried ``max_retries`` times, then reported in one line.

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

from bioplaus.errors import ConfigError, StudyError
from bioplaus.models.registry import get_model
from bioplaus.study._log import log as _log
from bioplaus.study.evaluation import check_folds, evaluate, split_seed_for
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
from bioplaus.study.slots import (
    concurrent_duplicate,
    draw_index,
    plan_slots,
    requeue_orphans,
    skip,
    skip_reason,
    stop_reason,
)
from bioplaus.study.storage import open_study, storage_errors


def _run_trial(study, trial, settings, space, X, y, input_shape, split_seed, n_jobs,
               known_complete: set[int] | None) -> str | None:
    """Admit, evaluate and tell one asked trial. Returns the status line, None if the
    trial was skipped, or ``"duplicate …"`` if it was skipped as a concurrent duplicate.
    ``known_complete``: COMPLETE trials before the ask (None: no duplicate check)."""
    origin = int(trial.user_attrs.get("origin", trial.number))
    trials = study.get_trials(deepcopy=False)
    reason = skip_reason(trial.number, origin, trials, settings.n_trials, settings.max_retries)
    if reason is not None:
        skip(study, trial, reason)
        return None
    draw = draw_index(trials, origin)
    trial.set_user_attr("origin", origin)
    trial.set_user_attr("draw", draw)
    params = suggest_all(trial, space)
    if known_complete is not None and origin == trial.number:
        dup = concurrent_duplicate(trial.number, params, study.get_trials(deepcopy=False), known_complete)
        if dup is not None:
            reason = f"duplicate: same configuration as trial {dup}, asked concurrently"
            skip(study, trial, reason, duplicate=True)
            return reason
    seed = derive_seed(settings.seed, INIT, draw)
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
        if result.fatal:
            raise ConfigError(f"study {settings.study_name} stopped: {result.message}")
        return f"FAILED ({result.message})"
    study.tell(trial, result.objective())
    flags = [f for f in ("invalid", "diverged", "censored") if getattr(result, f)]
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
    """Run trials of one study until it holds ``settings.n_trials`` valid COMPLETE trials.

    Raises :class:`~bioplaus.errors.ConfigError` (settings, options or folds that
    cannot work; an error every configuration would hit) or
    :class:`~bioplaus.errors.StudyError` (no valid point in
    ``max_consecutive_invalid`` draws, ``max_retries`` errors in a row, a storage
    that cannot be reached), each with one line naming the cause.

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
    spec = get_model(settings.model)
    spec.resolve_options(settings.options)  # a bad option stops here, naming model_options.<model>.<key>
    check_folds(y, settings.n_folds, f"dataset {settings.dataset}")
    space = spec.search_space(settings.options)
    split_seed = split_seed_for(settings.seed)
    name = settings.study_name
    check_duplicates = settings.sampler in MODEL_BASED_SAMPLERS
    n, retries_left = settings.n_trials, settings.max_retries
    study = None
    duplicates = 0
    while True:
        try:
            if study is None:
                study = open_study(settings, storage)
            recover_stale_trials(study, stale, running=set())  # this worker runs nothing now
            trials = study.get_trials(deepcopy=False)
            plan = plan_slots(trials, n, settings.max_retries)
            if plan.complete >= n:
                break
            why = stop_reason(plan, max_consecutive_invalid=settings.max_consecutive_invalid,
                              max_retries=settings.max_retries)
            if why is not None:
                raise StudyError(f"study {name} stopped: {why}")
            if plan.orphans:
                requeue_orphans(study, n, trials, settings.max_retries)
                continue
            if len(plan.slots) >= n and plan.waiting == 0:
                time.sleep(poll)  # the last trials run elsewhere; wait for them (or their death)
                continue
            known_complete = {t.number for t in trials if t.state == TrialState.COMPLETE}
            with warnings.catch_warnings():  # optuna warns that its heartbeat is meant for optimize()
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = study.ask()
            trial.set_user_attr("worker", worker_id())
        except storage_errors() as exc:  # a lost connection: retried a bounded number of times
            retries_left -= 1
            if retries_left <= 0:
                raise StudyError(f"study {name}: the storage cannot be reached ({_short(exc)}); "
                                 f"gave up after {settings.max_retries} attempts") from None
            _log(f"[{name}] storage error ({_short(exc)}); retrying in {poll:g} s")
            time.sleep(poll)
            continue
        retries_left = settings.max_retries
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
        except storage_errors() as exc:  # the storage went away mid-trial
            retries_left -= 1
            if retries_left <= 0:
                raise StudyError(f"study {name}: the storage cannot be reached ({_short(exc)}); "
                                 f"gave up after {settings.max_retries} attempts") from None
            _log(f"[{name}] trial {trial.number}: storage error ({_short(exc)}); the trial is given up "
                 f"(its configuration is re-queued), retrying in {poll:g} s")
            time.sleep(poll)
            try:  # FAIL without a result: an orphan, re-run with the same configuration and seed
                study.tell(trial, state=TrialState.FAIL)
            except Exception:  # noqa: BLE001 - still unreachable: the heartbeat check will fail it
                pass
            continue
        wall = time.perf_counter() - t0
        if status is None:  # skipped: not evaluated
            continue
        if status.startswith("duplicate"):
            duplicates += 1
            _log(f"[{name}] trial {trial.number}: {status}: asking again")
            time.sleep(random.uniform(0, min(5.0, 0.5 * duplicates)))  # break the lockstep of simultaneous asks
            continue
        duplicates = 0
        plan = plan_slots(study.get_trials(deepcopy=False), n, settings.max_retries)
        try:
            best = f"; best {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = ""
        _log(f"[{name}] trial {trial.number}: {status} in {wall:.1f} s; "
             f"{plan.complete}/{n} valid done{best}")
        if on_trial is not None:
            on_trial(study.get_trials(deepcopy=False)[trial.number])
    return study


def _short(exc: BaseException) -> str:
    """The first line of an exception's message (drivers add pages of context)."""
    from bioplaus.study.urls import redact_storage

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact_storage(text) if "://" in text else text
