"""One optimisation study per (dataset, model, sampler), persisted and resumable.

A study lives in an optuna storage: by default a journal file
(``results/<dataset>/<model>/<sampler>/study.journal``; optuna's
``JournalFileBackend`` is the backend optuna recommends for several processes
on one machine: appends under a file lock, no database server), or any
RDB URL (``postgresql://…``) shared by workers on several nodes.

Workers (one or many, on any storage) run :func:`run_worker`: each loops
"recover stale trials → stop if the study holds ``n_trials`` finished trials →
ask → evaluate → tell". Guarantees:

* a re-run continues where a killed run stopped: finished trials are never
  repeated; a trial left RUNNING by a dead worker (its heartbeat stopped, or
  its process is gone) is marked FAIL and its configuration re-queued with its
  original seed, so the study ends with exactly ``n_trials`` COMPLETE trials;
* a trial's seeds (model initialisation, shuffling, and the sampler's draw)
  derive from the study seed and the trial number only (see
  :mod:`bioplaus.seeding`): results do not depend on how many workers ran them.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from bioplaus.errors import ConfigError
from bioplaus.evaluation import evaluate, split_seed_for
from bioplaus.models.registry import get_model
from bioplaus.samplers import make_sampler, suggest_all
from bioplaus.seeding import INIT, derive_seed

HEARTBEAT_SECONDS = 20.0
#: a RUNNING trial whose heartbeat is older than this is taken as dead
STALE_AFTER_SECONDS = 120.0


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


def open_storage(storage: str | os.PathLike):
    """An optuna storage: an RDB URL (``scheme://…``) or a journal file path."""
    storage = str(storage)
    if "://" in storage:
        return optuna.storages.RDBStorage(storage, engine_kwargs={"pool_pre_ping": True})
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(storage, lock_obj=JournalFileOpenLock(storage)))


def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


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


def _is_stale(t: optuna.trial.FrozenTrial, now: float, stale_after: float) -> bool:
    worker = t.user_attrs.get("worker", "")
    host, _, pid = worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid():
        if not _pid_alive(int(pid)):
            return True
    beat = t.user_attrs.get("heartbeat")
    if beat is None:
        start = t.datetime_start.timestamp() if t.datetime_start else now
        return now - start > stale_after
    return now - float(beat) > stale_after


def recover_stale_trials(study: optuna.Study, stale_after: float = STALE_AFTER_SECONDS) -> list[int]:
    """Mark trials left RUNNING by dead workers as FAIL and re-queue their configurations."""
    recovered = []
    now = time.time()
    storage = study._storage  # optuna has no public API to fail another process's trial
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("worker") == _worker_id() or not _is_stale(t, now, stale_after):
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "message", "worker died during this trial; re-queued")
            ok = storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Exception:  # another worker got there first
            continue
        if ok is False:
            continue
        if t.params:
            origin = int(t.user_attrs.get("origin", t.number))
            study.enqueue_trial(t.params, user_attrs={"origin": origin}, skip_if_exists=False)
        recovered.append(t.number)
    return recovered


class _Heartbeat:
    """Background thread that stamps a running trial's ``heartbeat`` user attribute."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, every: float) -> None:
        self._study, self._trial_id, self._every = study, trial._trial_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._study._storage.set_trial_user_attr(self._trial_id, "heartbeat", time.time())
            except Exception:
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------- the loop
def _counts(study: optuna.Study) -> tuple[int, int, int]:
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state == TrialState.COMPLETE for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return done, running, waiting


def _surplus(study: optuna.Study, number: int, n_trials: int) -> bool:
    """True if trials numbered below ``number`` already fill the study (another worker raced us)."""
    ahead = sum(
        1 for t in study.get_trials(deepcopy=False)
        if t.number < number and t.state in (TrialState.COMPLETE, TrialState.RUNNING)
    )
    return ahead >= n_trials


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
    poll_seconds: float = 2.0,
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.Study:
    """Run trials of one study until it holds ``settings.n_trials`` COMPLETE trials.

    ``X`` flat ``(n, c*h*w)`` float32 (a memory map is shared with the fold
    workers), ``y`` int labels. ``n_jobs``: processes/threads for the folds.
    Progress is logged one line per trial on stderr.
    """
    study = open_study(settings, storage)
    spec = get_model(settings.model)
    space = spec.search_space(settings.options)
    split_seed = split_seed_for(settings.seed)
    name = settings.study_name
    while True:
        for n in recover_stale_trials(study, stale_after):
            _log(f"[{name}] trial {n} was left running by a dead worker: re-queued")
        done, running, waiting = _counts(study)
        if done >= settings.n_trials:
            break
        if done + running >= settings.n_trials and waiting == 0:
            time.sleep(poll_seconds)  # the last trials run elsewhere; wait for them (or their death)
            continue
        trial = study.ask()
        if _surplus(study, trial.number, settings.n_trials):
            origin = trial.user_attrs.get("origin")
            study.tell(trial, state=TrialState.FAIL)
            study._storage.set_trial_user_attr(trial._trial_id, "message", "surplus trial, not run")
            if origin is not None:  # give a re-queued configuration back
                study.enqueue_trial(trial.params, user_attrs={"origin": origin}, skip_if_exists=False)
            continue
        origin = int(trial.user_attrs.get("origin", trial.number))
        trial.set_user_attr("origin", origin)
        trial.set_user_attr("worker", _worker_id())
        trial.set_user_attr("heartbeat", time.time())
        params = suggest_all(trial, space)
        seed = derive_seed(settings.seed, INIT, origin)
        trial.set_user_attr("seed", seed)
        with _Heartbeat(study, trial, heartbeat_seconds):
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
            status = f"FAILED ({result.message})"
        else:
            study.tell(trial, result.objective())
            flags = [f for f in ("invalid", "diverged", "timed_out") if getattr(result, f)]
            acc = "n/a" if math.isnan(result.accuracy) else f"{result.accuracy:.4f}"
            status = f"accuracy {acc}" + (f" [{', '.join(flags)}]" if flags else "")
        done, _, _ = _counts(study)
        try:
            best = f"; best {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = ""
        _log(f"[{name}] trial {trial.number}: {status} in {wall:.1f} s; {done}/{settings.n_trials} done{best}")
        if on_trial is not None:
            on_trial(study.get_trials(deepcopy=False)[trial.number])
    return study


# --------------------------------------------------------------------------- outputs
def trials_frame(study: optuna.Study, settings: StudySettings) -> pd.DataFrame:
    """One row per trial in the ``trials.csv`` layout (see the README)."""
    space = get_model(settings.model).search_space(settings.options)
    rows = []
    for t in study.get_trials(deepcopy=False):
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
        row["message"] = ua.get("message", "")
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
