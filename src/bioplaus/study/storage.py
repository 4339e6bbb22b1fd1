"""Where a study lives: opening its optuna storage, creating or resuming the study.

A study lives in an optuna storage: by default a journal file
(``results/<dataset>/<model>/<sampler>/study.journal``: optuna's
``JournalFileBackend``, the backend optuna recommends for several processes
on one machine: appends under a file lock, no database server, and unlike
SQLite no "database is locked" errors under concurrent writers), or any RDB
URL (``postgresql://…``, ``mysql://…``) shared by workers on several nodes.
A study stores its :class:`~bioplaus.study.settings.StudySettings` and is
never resumed with other ones (:func:`open_study`; :func:`stored_fingerprint_mismatch`
lets the workflow check this before it deletes any output).

A journal whose tail was torn (a power cut, a full disk, a process killed in
the middle of an append) is repaired when it is opened (:func:`repair_journal`,
under optuna's own journal lock): the incomplete last record is dropped, with
a warning naming the file and the number of bytes, and the dropped bytes are
kept beside it (``study.journal.dropped-<time>``); finished trials are never
lost. Damage that is not a torn tail (garbage followed by valid records) is
refused with a message naming the file, the line, and the recovery command
(``bioplaus repair-journal FILE --truncate``). A storage that cannot be
reached (an unreachable PostgreSQL server) is one line, its password redacted
(:class:`~bioplaus.errors.StudyError`).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from bioplaus.errors import ConfigError, StudyError
from bioplaus.models.registry import get_model
from bioplaus.study._log import log as _log
from bioplaus.study.liveness import HEARTBEAT_SECONDS, STALE_AFTER_SECONDS, check_liveness, log_stale_trial
from bioplaus.study.samplers import make_sampler
from bioplaus.study.settings import StudySettings


def storage_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of a storage that cannot be reached (a lost or refused database connection)."""
    import sqlalchemy.exc

    return (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_storage(
    storage: str | os.PathLike,
    *,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
    stale_after: float = STALE_AFTER_SECONDS,
):
    """An optuna storage: an RDB URL (``scheme://…``, optuna heartbeat enabled) or a journal file path.

    ``heartbeat_seconds``/``stale_after`` (seconds, RDB only): optuna's
    heartbeat interval and grace period, see :mod:`bioplaus.study.liveness`;
    the same values as the workers' :func:`~bioplaus.study.worker.run_worker`.
    A journal is repaired first if its tail is torn (:func:`repair_journal`).
    Raises :class:`~bioplaus.errors.StudyError` (one line, password redacted)
    when a database cannot be reached."""
    storage = str(storage)
    if "://" in storage:
        from bioplaus.study.urls import redact_storage

        hb, stale = check_liveness(heartbeat_seconds, stale_after)
        engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if storage.startswith(("postgresql:", "postgresql+psycopg2:")):
            # a frozen worker must not hold row locks for ever: the server ends a
            # session left idle inside a transaction once the worker counts as dead
            engine_kwargs["connect_args"] = {
                "options": f"-c idle_in_transaction_session_timeout={int(stale * 1000)}"}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    storage, engine_kwargs=engine_kwargs,
                    heartbeat_interval=max(1, int(round(hb))), grace_period=max(1, int(math.ceil(stale))),
                    heartbeat_stale_trial_callback=log_stale_trial,
                )
        except storage_errors() as exc:
            raise StudyError(f"cannot reach the study storage {redact_storage(storage)}: "
                             f"{redact_storage(_first_line(exc))}") from None
        except (ImportError, ModuleNotFoundError) as exc:
            raise StudyError(f"cannot open the study storage {redact_storage(storage)}: {exc} "
                             "(install the database driver)") from None
        except Exception as exc:  # noqa: BLE001 - a malformed URL: one line, no password
            raise StudyError(f"cannot open the study storage {redact_storage(storage)}: "
                             f"{type(exc).__name__}: {redact_storage(_first_line(exc))}") from None
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    repair_journal(storage)
    return optuna.storages.JournalStorage(JournalFileBackend(storage, lock_obj=JournalFileOpenLock(storage)))


def _is_record(chunk: bytes) -> bool:
    try:
        rec = json.loads(chunk)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(rec, dict) and "op_code" in rec


def _salvage(line: bytes) -> int | None:
    """Offset of a whole record at the end of ``line`` (a torn record that a later append
    continued), or None."""
    start = line.find(b'{"op_code"', 1)
    while start != -1:
        if _is_record(line[start:]):
            return start
        start = line.find(b'{"op_code"', start + 1)
    return None


def repair_journal(path: str | os.PathLike, *, truncate: bool = False) -> int:
    """Repair a torn journal tail in place; return the number of bytes dropped.

    Under optuna's journal lock (no writer is mid-append): every line must be
    one JSON record. A torn last record (no newline, or not JSON) is dropped; a
    complete last record that lost only its newline gets it back; a line that is
    a torn record continued by a later append keeps that later record. The
    dropped bytes are written to ``<path>.dropped-<time>`` and a warning names
    the file and the count. A bad line followed by valid records cannot be
    repaired without losing them: :class:`~bioplaus.errors.StudyError` names the
    file and ``bioplaus repair-journal <path> --truncate``, which (``truncate``)
    keeps the records before the bad line and moves the rest to the backup."""
    from optuna.storages.journal import JournalFileOpenLock
    from optuna.storages.journal._file import get_lock_file

    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with get_lock_file(JournalFileOpenLock(str(path))):
        data = path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # bytes after the last newline (b"" when the file ends with one)
        kept: list[bytes] = []
        dropped: list[bytes] = []
        rewrite = False
        offset = 0
        for number, line in enumerate(lines, start=1):
            if _is_record(line):
                kept.append(line)
            else:
                at = _salvage(line)
                later_valid = any(_is_record(rest) for rest in lines[number:])
                if at is not None:
                    kept.append(line[at:])
                    dropped.append(line[:at])
                    rewrite = True
                elif not later_valid or truncate:
                    dropped.append(b"\n".join(lines[number - 1:]) + b"\n" + tail)
                    tail = b""
                    break
                else:
                    raise StudyError(
                        f"the study journal {path} is damaged at line {number} (byte {offset}), and valid "
                        "records follow, so it cannot be repaired by dropping a torn tail. Keep the "
                        f"{len(kept)} records before it with `bioplaus repair-journal {path} --truncate` "
                        "(the rest is kept in a backup file beside it), or start the study afresh "
                        "(`bioplaus study ... --fresh`, or delete the file)")
            offset += len(line) + 1
        add_newline = False
        if tail:
            if _is_record(tail):
                add_newline = True  # a whole record that lost only its newline
            else:
                dropped.append(tail)
        n_dropped = sum(len(d) for d in dropped)
        if not n_dropped and not add_newline:
            return 0
        if n_dropped:
            backup = path.with_name(f"{path.name}.dropped-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            backup.write_bytes(b"\n".join(dropped))
        if rewrite:
            body = b"".join(k + b"\n" for k in kept)
            tmp = path.with_name(path.name + ".repair")
            tmp.write_bytes(body)
            os.replace(tmp, path)
        else:
            good = sum(len(k) + 1 for k in kept)
            with open(path, "r+b") as f:
                f.truncate(good)
                if add_newline:
                    f.seek(good)
                    f.write(tail + b"\n")
                f.flush()
                os.fsync(f.fileno())
        if n_dropped:
            _log(f"warning: study journal {path}: dropped {n_dropped} bytes of an incomplete or damaged "
                 f"record at its end (a torn write; kept in {backup.name}); {len(kept) + add_newline} "
                 "records kept")
        return n_dropped


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
    else:
        diffs = fingerprint_diffs(stored, wanted)
        if diffs:
            raise ConfigError(
                f"study {settings.study_name} already holds trials made with other settings ("
                + "; ".join(diffs)
                + "). Restore those settings to resume it, or start afresh (`bioplaus study --fresh`, "
                "or delete its storage)."
            )
    return study


def fingerprint_diffs(stored: dict, wanted: dict) -> list[str]:
    """``key: stored X, now Y`` for every setting that differs between two fingerprints."""
    return [f"{k}: stored {stored.get(k)!r}, now {wanted.get(k)!r}"
            for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]


def stored_fingerprint(journal: str | os.PathLike, study_name: str) -> dict | None:
    """The settings fingerprint stored in a journal file for ``study_name``, read without
    optuna (and without writing): None if the file or the study is not there."""
    path = Path(journal)
    if not path.exists():
        return None
    names: dict[int, str] = {}  # live studies by id (ids are given in order of creation)
    next_id = 0
    settings: dict[int, Any] = {}
    with open(path, "rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue
            op = rec.get("op_code") if isinstance(rec, dict) else None
            if op == 0:  # CREATE_STUDY (ignored if the name exists, as optuna does)
                if rec.get("study_name") not in names.values():
                    names[next_id] = rec.get("study_name")
                    next_id += 1
            elif op == 1:  # DELETE_STUDY
                names.pop(rec.get("study_id"), None)
                settings.pop(rec.get("study_id"), None)
            elif op == 2 and "settings" in (rec.get("user_attr") or {}):  # SET_STUDY_USER_ATTR
                settings[rec.get("study_id")] = rec["user_attr"]["settings"]
    for sid, name in names.items():
        if name == study_name:
            return settings.get(sid)
    return None
