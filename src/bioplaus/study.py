"""One optimisation study per (dataset, model, sampler), persisted and resumable,
run by one or many worker processes.

Storage
-------
A study lives in an optuna storage: by default a journal file
(``results/<dataset>/<model>/<sampler>/study.journal``: optuna's
``JournalFileBackend``, the backend optuna recommends for several processes
on one machine: appends under a file lock, no database server, and unlike
SQLite no "database is locked" errors under concurrent writers), or any RDB
URL (``postgresql://…``, ``mysql://…``) shared by workers on several nodes.

Workers
-------
Each worker runs :func:`run_worker`, a loop "recover dead workers' trials →
stop if the study holds ``n_trials`` COMPLETE trials → ask → admit or skip →
evaluate → tell". Any number of workers, started at any time, on any host,
share one study. The study is made of ``n_trials`` *slots*, one per
configuration to evaluate, each identified by its *origin*, the number of the
trial that first asked for it:

* a trial asked fresh from the sampler is admitted if fewer than ``n_trials``
  live slots have lower numbers (a slot is live unless its trial was skipped
  or ended in an evaluation error); otherwise it is *skipped* (FAIL, user
  attribute ``skipped``, never evaluated): workers racing at the end of a study
  never overshoot ``n_trials``;
* a slot whose trial ended without a result because its worker died (FAIL by
  recovery, see below) is *orphaned*; any worker re-queues its configuration
  (``enqueue_trial``) with user attribute ``origin``; the copy re-uses the
  origin's seed. If two workers re-queue the same orphan, the copy with the
  higher number is skipped: each slot ends with exactly one COMPLETE trial.

So the study ends with exactly ``n_trials`` COMPLETE trials, one per slot.
When no worker died and no evaluation failed, the slots are trials
``0 … n_trials-1``; otherwise re-queued copies and replacements take later
numbers. A trial's seeds
(model initialisation, shuffling, and the sampler's draw) derive from the
study seed and the trial number (origin) only (see :mod:`bioplaus.seeding`):
with the ``random`` sampler, trial ``k`` evaluates the same configuration with
the same seed whether 1 or 10 workers ran the study.

With a model-based sampler (``gp``, ``tpe``) a worker asking while others
evaluate sees their configurations as pending points (constant liar). Optuna
writes a trial's parameters only after the sampler has chosen them, so two
workers asking at the same moment could still pick the same point: after
writing its parameters each trial looks for an identical configuration that
its sampler could not have known (running, or completed since the ask) and, if
there is one, is skipped and asks again (after a random pause). Of two
simultaneous duplicates at most one is evaluated (each writes before it
reads, so the later reader sees the other).

Dead workers
------------
Every worker stamps its running trial with a ``heartbeat`` user attribute
(wall-clock seconds) from a background thread every ``heartbeat_seconds``, and
records its ``worker`` (``host:pid``). A RUNNING trial of another worker is
declared dead when its process is gone (same host: checked at once), or when
its heartbeat is older than ``stale_after`` seconds (any host: a killed node,
a frozen process). This one mechanism works on every storage, the journal
file included, which has no heartbeat of its own. On an RDB storage optuna's
own heartbeat is enabled as well (``RDBStorage(heartbeat_interval,
grace_period)``: the same thread calls ``record_heartbeat`` and each loop calls
``optuna.storages.fail_stale_trials``): its staleness is judged on the
database server's clock, so it is immune to clock skew between nodes. There
optuna's check decides and the heartbeat attribute is only a backstop (a
worker killed before its first optuna heartbeat), judged with two more
heartbeat intervals of margin; on PostgreSQL each session also gets
``idle_in_transaction_session_timeout = stale_after``, so a frozen worker
cannot hold a row lock for ever. Whichever detects a dead trial first moves
it RUNNING → FAIL; that transition is atomic in both storages (row lock /
ordered journal), and re-queueing goes through the orphan rule above, so a
configuration is never evaluated twice into the COMPLETE set. A worker
wrongly declared dead (e.g. suspended, then resumed) finds its trial finished
when it reports, discards its result and carries on.

``heartbeat_seconds`` and ``stale_after`` default to 20 s and 120 s; set them
with the environment variables ``BIOPLAUS_HEARTBEAT_SECONDS`` and
``BIOPLAUS_STALE_AFTER_SECONDS`` (same values for every worker of a study;
``stale_after`` at least twice ``heartbeat_seconds``, and longer than any pause
of a live worker's heartbeat thread: a heavily loaded node, a slow storage).

Tables
------
``trials.csv`` lists the evaluated trials: COMPLETE ones, FAIL ones (an
evaluation error, or a worker that died, with a message). Skipped trials
(never evaluated) stay in the storage only, so the tables of a study do not
depend on how many workers ran it.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import optuna
import pandas as pd
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from bioplaus.errors import ConfigError
from bioplaus.evaluation import evaluate, split_seed_for
from bioplaus.models.registry import get_model
from bioplaus.samplers import make_sampler, suggest_all
from bioplaus.seeding import INIT, derive_seed

HEARTBEAT_SECONDS = 20.0
#: a RUNNING trial whose heartbeat is older than this is taken as dead
STALE_AFTER_SECONDS = 120.0
HEARTBEAT_ENV = "BIOPLAUS_HEARTBEAT_SECONDS"
STALE_AFTER_ENV = "BIOPLAUS_STALE_AFTER_SECONDS"
#: samplers whose suggestion depends on the other workers' pending trials
MODEL_BASED_SAMPLERS = ("gp", "tpe")


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


def _env_seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        val = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number of seconds") from None
    if not (val > 0 and math.isfinite(val)):
        raise ConfigError(f"{name}={text!r} must be a positive number of seconds")
    return val


def liveness_settings(
    heartbeat_seconds: float | None = None, stale_after: float | None = None
) -> tuple[float, float]:
    """``(heartbeat_seconds, stale_after)``: the arguments, else the environment, else the defaults."""
    hb = heartbeat_seconds if heartbeat_seconds is not None else _env_seconds(HEARTBEAT_ENV, HEARTBEAT_SECONDS)
    stale = stale_after if stale_after is not None else _env_seconds(STALE_AFTER_ENV, STALE_AFTER_SECONDS)
    if stale < 2 * hb:
        raise ConfigError(
            f"stale_after ({stale:g} s, {STALE_AFTER_ENV}) must be at least twice heartbeat_seconds "
            f"({hb:g} s, {HEARTBEAT_ENV}), or live workers would be declared dead"
        )
    return float(hb), float(stale)


def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


def _log_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    _log(f"[{study.study_name}] trial {trial.number} was left running by a dead worker: re-queued "
         f"(optuna heartbeat stale; worker {trial.user_attrs.get('worker', '?')})")


def open_storage(
    storage: str | os.PathLike,
    *,
    heartbeat_seconds: float | None = None,
    stale_after: float | None = None,
):
    """An optuna storage: an RDB URL (``scheme://…``, optuna heartbeat enabled) or a journal file path."""
    storage = str(storage)
    if "://" in storage:
        hb, stale = liveness_settings(heartbeat_seconds, stale_after)
        engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if storage.startswith(("postgresql:", "postgresql+psycopg2:")):
            # a frozen worker must not hold row locks for ever: the server ends a
            # session left idle inside a transaction once the worker counts as dead
            engine_kwargs["connect_args"] = {
                "options": f"-c idle_in_transaction_session_timeout={int(stale * 1000)}"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                storage, engine_kwargs=engine_kwargs,
                heartbeat_interval=max(1, int(round(hb))), grace_period=max(1, int(math.ceil(stale))),
                heartbeat_stale_trial_callback=_log_stale,
            )
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(storage, lock_obj=JournalFileOpenLock(storage)))


def open_study(settings: StudySettings, storage) -> optuna.Study:
    """Create or load the study; refuse to resume one made with other settings."""
    spec = get_model(settings.model)
    space = spec.search_space(settings.options)
    sampler = make_sampler(
        settings.sampler, space, settings.seed,
        n_initial_points=settings.n_initial_points, kappa=settings.kappa,
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=settings.study_name, storage=storage, sampler=sampler,
        direction="maximize", load_if_exists=True,
    )
    wanted = json.loads(json.dumps(settings.fingerprint()))
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", wanted)
    elif stored != wanted:
        diffs = [f"{k}: stored {stored.get(k)!r}, now {wanted.get(k)!r}"
                 for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
        raise ConfigError(
            f"study {settings.study_name} already holds trials made with other settings ("
            + "; ".join(diffs)
            + "). Restore those settings to resume it, or start afresh (`bioplaus study --fresh`, "
            "or delete its storage)."
        )
    return study


# --------------------------------------------------------------------------- liveness
def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale_reason(t: FrozenTrial, now: float, stale_after: float) -> str | None:
    """Why the RUNNING trial ``t`` is taken as dead, or None if its worker may be alive."""
    worker = t.user_attrs.get("worker", "")
    host, _, pid = worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid():
        if not _pid_alive(int(pid)):
            return f"its worker process {worker} is gone"
    beat = t.user_attrs.get("heartbeat")
    if beat is None:
        start = t.datetime_start.timestamp() if t.datetime_start else now
        if now - start > stale_after:
            return f"no heartbeat {now - start:.0f} s after it started"
        return None
    if now - float(beat) > stale_after:
        return f"its last heartbeat is {now - float(beat):.0f} s old (worker {worker or '?'})"
    return None


def recover_stale_trials(study: optuna.Study, stale_after: float | None = None) -> list[int]:
    """Mark trials left RUNNING by dead workers as FAIL; return their numbers.

    Their configurations are re-queued by :func:`requeue_orphans` (which
    :func:`run_worker` calls right after). With an RDB
    storage, optuna's heartbeat check (``fail_stale_trials``) runs first."""
    if stale_after is None:
        stale_after = liveness_settings()[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # no-op unless RDB with heartbeat
    recovered = []
    now = time.time()
    storage = study._storage  # optuna has no public API to fail another process's trial
    # with optuna's heartbeat on (RDB), it decides on the server's clock; the
    # heartbeat attribute is then a backstop (e.g. a worker killed before its
    # first optuna heartbeat), judged with a margin of two heartbeat intervals
    attr_stale_after = stale_after
    if optuna.storages._heartbeat.is_heartbeat_enabled(storage):
        attr_stale_after = stale_after + 2 * storage.get_heartbeat_interval()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("worker") == _worker_id():
            continue
        reason = _stale_reason(t, now, attr_stale_after)
        if reason is None:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "message", f"worker died during this trial ({reason})")
            if storage.set_trial_state_values(t._trial_id, TrialState.FAIL) is False:
                continue
        except (UpdateFinishedTrialError, KeyError):  # another worker got there first
            continue
        _log(f"[{study.study_name}] trial {t.number} was left running by a dead worker: re-queued ({reason})")
        recovered.append(t.number)
    return recovered


class _Heartbeat:
    """Background thread that stamps a running trial's ``heartbeat`` user attribute
    (and records optuna's heartbeat on an RDB storage that has it enabled)."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, every: float) -> None:
        self._storage, self._trial_id, self._every = study._storage, trial._trial_id, every
        self._optuna_heartbeat = optuna.storages._heartbeat.is_heartbeat_enabled(self._storage)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bioplaus-heartbeat")

    def _beat(self) -> None:
        if self._optuna_heartbeat:
            self._storage.record_heartbeat(self._trial_id)
        self._storage.set_trial_user_attr(self._trial_id, "heartbeat", time.time())

    def _run(self) -> None:
        while True:
            try:
                self._beat()
            except Exception:  # trial finished (e.g. failed by another worker), storage gone
                return
            if self._stop.wait(self._every):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------- slots
def _origin(t: FrozenTrial) -> int:
    return int(t.user_attrs.get("origin", t.number))


def _kind(t: FrozenTrial) -> str:
    """``complete``, ``running``, ``waiting``, ``skipped`` (never evaluated),
    ``error`` (evaluation failed) or ``died`` (its worker stopped before telling)."""
    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.RUNNING:
        return "running"
    if t.state == TrialState.WAITING:
        return "waiting"
    if t.user_attrs.get("skipped"):
        return "skipped"
    if t.user_attrs.get("error"):
        return "error"
    return "died"


@dataclass
class SlotPlan:
    """The study's state seen as slots (see the module docstring).

    ``slots``: origins of the live slots, ascending (at most ``n_trials``);
    ``complete``: number of COMPLETE trials; ``done``: slots with a COMPLETE
    trial; ``orphans``: slots with no COMPLETE, RUNNING or WAITING trial
    (their worker died), mapped to the parameters to re-queue;
    ``waiting``: WAITING trials that may still run."""

    slots: list[int]
    complete: int
    done: set[int]
    orphans: dict[int, dict[str, Any]]
    waiting: int


def plan_slots(trials: Iterable[FrozenTrial], n_trials: int) -> SlotPlan:
    """Slots of a study from its trials (a pure function of the stored state)."""
    trials = sorted(trials, key=lambda t: t.number)
    by_origin: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        by_origin.setdefault(_origin(t), []).append(t)
    slots: list[int] = []
    for t in trials:
        if _origin(t) != t.number:  # a re-queued copy, not a slot of its own
            continue
        kinds = {_kind(c) for c in by_origin[t.number]}
        if _kind(t) == "skipped" or ("error" in kinds and "complete" not in kinds):
            continue
        if len(slots) < n_trials:
            slots.append(t.number)
    done = {o for o in slots if any(_kind(c) == "complete" for c in by_origin[o])}
    orphans = {}
    for o in slots:
        kinds = [_kind(c) for c in by_origin[o]]
        if not any(k in ("complete", "running", "waiting") for k in kinds):
            params = next((dict(c.params) for c in reversed(by_origin[o]) if c.params), {})
            orphans[o] = params
    waiting = sum(1 for t in trials if _kind(t) == "waiting" and _origin(t) in slots and _origin(t) not in done)
    return SlotPlan(slots=slots, complete=sum(_kind(t) == "complete" for t in trials), done=done,
                    orphans=orphans, waiting=waiting)


def _skip_reason(trial_number: int, origin: int, trials: list[FrozenTrial], n_trials: int) -> str | None:
    """Why the trial just asked must not be evaluated, or None to evaluate it."""
    plan = plan_slots(trials, n_trials)
    if origin == trial_number:
        if trial_number not in plan.slots:
            return f"surplus: {n_trials} slots are filled by trials with lower numbers"
        return None
    if origin not in plan.slots:
        return f"re-queued copy of trial {origin}, which is no longer a slot"
    if origin in plan.done:
        return f"re-queued copy of trial {origin}, which is already complete"
    for t in trials:
        if t.number != trial_number and _origin(t) == origin and t.number < trial_number \
                and _kind(t) in ("running", "waiting"):
            return f"re-queued copy of trial {origin}, which trial {t.number} runs"
    return None


def requeue_orphans(study: optuna.Study, n_trials: int, trials: list[FrozenTrial] | None = None) -> list[int]:
    """Re-queue the configuration of every slot whose worker died; return their origins."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    plan = plan_slots(trials, n_trials)
    for origin, params in plan.orphans.items():
        study.enqueue_trial(params, user_attrs={"origin": origin}, skip_if_exists=False)
        _log(f"[{study.study_name}] slot {origin}: configuration re-queued (its worker died)")
    return sorted(plan.orphans)


def _concurrent_duplicate(trial_number: int, params: Mapping[str, Any], trials: list[FrozenTrial],
                          known_complete: set[int]) -> int | None:
    """Number of a trial with the same parameters that this trial's sampler could not see, or None."""
    for t in trials:
        if t.number == trial_number:
            continue
        if t.state == TrialState.RUNNING or (t.state == TrialState.COMPLETE and t.number not in known_complete):
            if t.params and dict(t.params) == dict(params):
                return t.number
    return None


def _skip(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    study._storage.set_trial_user_attr(trial._trial_id, "skipped", reason)
    study.tell(trial, state=TrialState.FAIL)


# --------------------------------------------------------------------------- the loop
def _run_trial(study, trial, settings, space, X, y, input_shape, split_seed, n_jobs,
               known_complete: set[int] | None) -> str | None:
    """Admit, evaluate and tell one asked trial. Returns the status line, None if the
    trial was skipped, or ``"duplicate …"`` if it was skipped as a concurrent duplicate.
    ``known_complete``: COMPLETE trials before the ask (None: no duplicate check)."""
    origin = int(trial.user_attrs.get("origin", trial.number))
    reason = _skip_reason(trial.number, origin, study.get_trials(deepcopy=False), settings.n_trials)
    if reason is not None:
        _skip(study, trial, reason)
        return None
    trial.set_user_attr("origin", origin)
    params = suggest_all(trial, space)
    if known_complete is not None and origin == trial.number:
        dup = _concurrent_duplicate(trial.number, params, study.get_trials(deepcopy=False), known_complete)
        if dup is not None:
            reason = f"duplicate: same configuration as trial {dup}, asked concurrently"
            _skip(study, trial, reason)
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
    heartbeat_seconds: float | None = None,
    stale_after: float | None = None,
    poll_seconds: float | None = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
) -> optuna.Study:
    """Run trials of one study until it holds ``settings.n_trials`` COMPLETE trials.

    ``X`` flat ``(n, c*h*w)`` float32 (a memory map is shared with the fold
    workers), ``y`` int labels. ``n_jobs``: processes/threads for the folds.
    ``heartbeat_seconds``/``stale_after`` (seconds): see the module docstring
    (default: environment, else 20 and 120). ``poll_seconds``: pause while the
    last trials run in other workers (default ``min(2, stale_after / 4)``).
    Progress is logged one line per trial on stderr.
    """
    hb, stale = liveness_settings(heartbeat_seconds, stale_after)
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
        trial.set_user_attr("worker", _worker_id())
        t0 = time.perf_counter()
        try:
            # the heartbeat covers the whole trial, the sampler's choice included
            # (optuna samples lazily, at the first suggest: a GP fit can take seconds)
            with _Heartbeat(study, trial, hb):
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


# --------------------------------------------------------------------------- outputs
def trials_frame(study: optuna.Study, settings: StudySettings) -> pd.DataFrame:
    """One row per evaluated trial in the ``trials.csv`` layout (see the README).

    Trials skipped without evaluation (surplus asks of racing workers,
    duplicate points, superseded re-queued copies) and queued trials are left
    out; they stay in the storage. A RUNNING trial (an export while the study
    runs) appears with state RUNNING."""
    space = get_model(settings.model).search_space(settings.options)
    rows = []
    for t in study.get_trials(deepcopy=False):
        if _kind(t) in ("skipped", "waiting"):  # never evaluated (see the module docstring)
            continue
        ua = t.user_attrs
        accs = ua.get("fold_accuracies") or [None] * settings.n_folds
        secs = ua.get("fold_fit_seconds") or [math.nan] * settings.n_folds
        acc = ua.get("accuracy")
        row: dict[str, Any] = {
            "dataset": settings.dataset,
            "model": settings.model,
            "sampler": settings.sampler,
            "number": t.number,
            "state": t.state.name,
            "value": t.value if t.value is not None else math.nan,
            "accuracy": math.nan if acc is None else acc,
        }
        for k in range(settings.n_folds):
            a = accs[k] if k < len(accs) else None
            row[f"accuracy_fold_{k + 1}"] = math.nan if a is None else a
        row["fit_seconds"] = ua.get("fit_seconds", math.nan)
        for k in range(settings.n_folds):
            row[f"fit_seconds_fold_{k + 1}"] = secs[k] if k < len(secs) else math.nan
        row["duration_seconds"] = ua.get("duration_seconds", math.nan)
        row["diverged"] = bool(ua.get("diverged", False))
        row["timed_out"] = bool(ua.get("timed_out", False))
        row["invalid"] = bool(ua.get("invalid", False))
        message = ua.get("message", "")
        if not message and _kind(t) == "died":
            message = "worker died during this trial; configuration re-queued"
        row["message"] = message
        row["seed"] = ua.get("seed", -1)
        row["origin"] = ua.get("origin", t.number)
        row["n_classes"] = ua.get("n_classes", math.nan)
        row["chance"] = ua.get("chance", math.nan)
        for p in space:
            row[f"param_{p}"] = t.params.get(p)
        rows.append(row)
    cols = None if rows else ["dataset", "model", "sampler", "number", "state", "value", "accuracy"]
    return pd.DataFrame(rows, columns=cols)


def best_record(study: optuna.Study, settings: StudySettings) -> dict[str, Any]:
    """The best valid COMPLETE trial (highest mean accuracy) as a JSON-able dict."""
    best = None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        acc = t.user_attrs.get("accuracy")
        if acc is None or t.user_attrs.get("invalid"):
            continue
        if best is None or acc > best.user_attrs["accuracy"]:
            best = t
    out: dict[str, Any] = {
        "dataset": settings.dataset, "model": settings.model, "sampler": settings.sampler,
        "n_trials": settings.n_trials, "n_folds": settings.n_folds, "epochs": settings.epochs,
        "seed": settings.seed,
    }
    if best is None:
        out.update({"number": None, "accuracy": None, "params": None})
    else:
        out.update({
            "number": best.number,
            "accuracy": best.user_attrs["accuracy"],
            "fold_accuracies": best.user_attrs.get("fold_accuracies"),
            "params": best.params,
        })
    return out


def write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_outputs(study: optuna.Study, settings: StudySettings, out_dir: Path) -> tuple[Path, Path]:
    """Write ``trials.csv`` and ``best.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    frame = trials_frame(study, settings)
    trials_path, best_path = out_dir / "trials.csv", out_dir / "best.json"
    write_atomic(trials_path, frame.to_csv(index=False))
    write_atomic(best_path, json.dumps(best_record(study, settings), indent=2, default=_json_default) + "\n")
    return trials_path, best_path


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    raise TypeError(f"not JSON serialisable: {obj!r}")


warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
