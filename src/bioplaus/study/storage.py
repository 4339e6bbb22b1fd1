"""Where a study lives: opening its optuna storage, creating or resuming the study.

A study lives in an optuna storage: by default a journal file
(``results/<dataset>/<model>/<sampler>/study.journal``: optuna's
``JournalFileBackend``, the backend optuna recommends for several processes
on one machine: appends under a file lock, no database server, and unlike
SQLite no "database is locked" errors under concurrent writers), or any RDB
URL (``postgresql://…``, ``mysql://…``) shared by workers on several nodes.
A study stores its :class:`~bioplaus.study.settings.StudySettings` and is
never resumed with other ones (:func:`open_study`).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import optuna

from bioplaus.errors import ConfigError
from bioplaus.models.registry import get_model
from bioplaus.study.liveness import HEARTBEAT_SECONDS, STALE_AFTER_SECONDS, check_liveness, log_stale_trial
from bioplaus.study.samplers import make_sampler
from bioplaus.study.settings import StudySettings


def open_storage(
    storage: str | os.PathLike,
    *,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
    stale_after: float = STALE_AFTER_SECONDS,
):
    """An optuna storage: an RDB URL (``scheme://…``, optuna heartbeat enabled) or a journal file path.

    ``heartbeat_seconds``/``stale_after`` (seconds, RDB only): optuna's
    heartbeat interval and grace period, see :mod:`bioplaus.study.liveness`;
    the same values as the workers' :func:`~bioplaus.study.worker.run_worker`."""
    storage = str(storage)
    if "://" in storage:
        hb, stale = check_liveness(heartbeat_seconds, stale_after)
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
                heartbeat_stale_trial_callback=log_stale_trial,
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
