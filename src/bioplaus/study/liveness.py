"""Liveness of a study's workers: heartbeats, and recovery of trials left by dead workers.

Every worker stamps its running trial with a ``heartbeat`` user attribute
(wall-clock seconds) from a background thread (:class:`Heartbeat`) every
``heartbeat_seconds``, and records its ``worker`` (``host:pid``). A RUNNING
trial of another worker is declared dead (:func:`recover_stale_trials`) when
its process is gone (same host: checked at once), or when its heartbeat is
older than ``stale_after`` seconds (any host: a killed node, a frozen
process). This one mechanism works on every storage, the journal file
included, which has no heartbeat of its own. On an RDB storage optuna's own
heartbeat is enabled as well (``RDBStorage(heartbeat_interval, grace_period)``,
see :func:`bioplaus.study.storage.open_storage`: the same thread calls
``record_heartbeat`` and each loop calls ``optuna.storages.fail_stale_trials``):
its staleness is judged on the database server's clock, so it is immune to
clock skew between nodes. There optuna's check decides and the heartbeat
attribute is only a backstop (a worker killed before its first optuna
heartbeat), judged with two more heartbeat intervals of margin; on PostgreSQL
each session also gets ``idle_in_transaction_session_timeout = stale_after``,
so a frozen worker cannot hold a row lock for ever. Whichever detects a dead
trial first moves it RUNNING → FAIL; that transition is atomic in both
storages (row lock / ordered journal), and re-queueing goes through the orphan
rule of :mod:`bioplaus.study.slots`, so a configuration is never evaluated
twice into the COMPLETE set. A worker wrongly declared dead (e.g. suspended,
then resumed) finds its trial finished when it reports, discards its result
and carries on.

``heartbeat_seconds`` and ``stale_after`` are arguments (of
:func:`~bioplaus.study.storage.open_storage` and
:func:`~bioplaus.study.worker.run_worker`) that default to
:data:`HEARTBEAT_SECONDS` and :data:`STALE_AFTER_SECONDS` (20 s and 120 s);
give every worker of a study the same values, ``stale_after`` at least twice
``heartbeat_seconds`` (:func:`check_liveness`), and longer than any pause of a
live worker's heartbeat thread (a heavily loaded node, a slow storage).
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import warnings

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from bioplaus.errors import ConfigError
from bioplaus.study._log import log as _log

#: seconds between two heartbeats of a running trial
HEARTBEAT_SECONDS = 20.0
#: a RUNNING trial whose heartbeat is older than this is taken as dead
STALE_AFTER_SECONDS = 120.0


def check_liveness(heartbeat_seconds: float, stale_after: float) -> tuple[float, float]:
    """``(heartbeat_seconds, stale_after)`` as floats, once they are known to be usable.

    Both must be positive, finite numbers of seconds, and ``stale_after`` at
    least twice ``heartbeat_seconds`` (else live workers would be declared
    dead); otherwise :class:`~bioplaus.errors.ConfigError`."""
    values = []
    for name, val in (("heartbeat_seconds", heartbeat_seconds), ("stale_after", stale_after)):
        try:
            sec = float(val)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}={val!r} is not a number of seconds") from None
        if not (sec > 0 and math.isfinite(sec)):
            raise ConfigError(f"{name}={val!r} must be a positive number of seconds")
        values.append(sec)
    hb, stale = values
    if stale < 2 * hb:
        raise ConfigError(
            f"stale_after ({stale:g} s) must be at least twice heartbeat_seconds ({hb:g} s), "
            "or live workers would be declared dead"
        )
    return hb, stale


def log_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Log a trial failed by optuna's own heartbeat check (``RDBStorage``'s stale-trial callback)."""
    _log(f"[{study.study_name}] trial {trial.number} was left running by a dead worker: re-queued "
         f"(optuna heartbeat stale; worker {trial.user_attrs.get('worker', '?')})")


def worker_id() -> str:
    """This worker process: ``host:pid``."""
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


def recover_stale_trials(study: optuna.Study, stale_after: float = STALE_AFTER_SECONDS,
                         running: set[int] | None = None) -> list[int]:
    """Mark trials left RUNNING by dead workers as FAIL; return their numbers.

    ``stale_after`` (seconds): a heartbeat older than this means a dead worker.
    ``running``: the trial numbers this process is evaluating now; a RUNNING
    trial of this process (``worker`` = this ``host:pid``) that is not among
    them was left by it (a storage error, an earlier run in the same process)
    and is failed at once. None (default): every trial of this process is
    taken as running.
    Their configurations are re-queued by
    :func:`~bioplaus.study.slots.requeue_orphans` (which
    :func:`~bioplaus.study.worker.run_worker` calls right after). With an RDB
    storage, optuna's heartbeat check (``fail_stale_trials``) runs first."""
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
    me = worker_id()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("worker") == me:
            if running is None or t.number in running:
                continue
            reason = "this worker left it without a result"
        else:
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


class Heartbeat:
    """Background thread that stamps a running trial's ``heartbeat`` user attribute
    (and records optuna's heartbeat on an RDB storage that has it enabled).

    ``every`` (seconds): the pause between two beats. A context manager: the
    thread beats from ``__enter__`` until ``__exit__``."""

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
