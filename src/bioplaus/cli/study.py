"""``bioplaus study | export | repeats | alignment``: run or resume a study, write its tables, the noise floor, alignment.

The top of the settings path for the study layer: values come from the
command line (the workflow builds it from the config) and, for what a
cluster job inherits rather than is given, from the environment (liveness
timings; the storage password, :data:`bioplaus.config.STORAGE_PASSWORD_ENV`),
and go into :mod:`bioplaus.study` as arguments.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from bioplaus.errors import ConfigError


def _json_arg(text: str) -> dict:
    try:
        val = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--options is not valid JSON: {exc}") from exc
    if not isinstance(val, dict):
        raise ConfigError("--options must be a JSON object")
    return val


def _threads(n: int | None) -> int:
    return max(1, int(n) if n else (os.cpu_count() or 1))


#: environment variables `bioplaus study` reads when --heartbeat-seconds /
#: --stale-after-seconds are not given (they reach cluster jobs through the environment)
HEARTBEAT_ENV = "BIOPLAUS_HEARTBEAT_SECONDS"
STALE_AFTER_ENV = "BIOPLAUS_STALE_AFTER_SECONDS"


def _env_seconds(name: str) -> float | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        val = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number of seconds") from None
    if not (val > 0 and math.isfinite(val)):
        raise ConfigError(f"{name}={text!r} must be a positive number of seconds")
    return val


def _liveness(args) -> dict:
    """``heartbeat_seconds``/``stale_after`` for the study: each from its option, else its
    environment variable, else left out (the library's default)."""
    out = {}
    for key, option, env in (("heartbeat_seconds", args.heartbeat_seconds, HEARTBEAT_ENV),
                             ("stale_after", args.stale_after_seconds, STALE_AFTER_ENV)):
        val = option if option is not None else _env_seconds(env)
        if val is not None:
            out[key] = val
    return out


def _settings(args):
    from bioplaus.data import load_prepared
    from bioplaus.study import StudySettings
    from bioplaus.study.settings import data_fingerprint

    StudySettings(dataset="-", model=args.model, sampler=args.sampler, n_trials=args.n_trials,
                  n_folds=args.folds, epochs=args.epochs, seed=args.seed, time_limit=args.time_limit,
                  n_initial_points=args.n_initial_points, kappa=args.kappa, max_retries=args.max_retries,
                  max_consecutive_invalid=args.max_consecutive_invalid)  # bad values stop before the data loads
    data = load_prepared(args.data)
    meta = json.loads((Path(args.data) / "meta.json").read_text())
    fp = data_fingerprint(meta)
    settings = StudySettings(
        dataset=args.dataset or data.name, model=args.model, sampler=args.sampler,
        n_trials=args.n_trials, n_folds=args.folds, epochs=args.epochs, seed=args.seed,
        time_limit=args.time_limit, options=_json_arg(args.options),
        n_initial_points=args.n_initial_points, kappa=args.kappa, data_fingerprint=fp,
        max_retries=args.max_retries, max_consecutive_invalid=args.max_consecutive_invalid,
    )
    return settings, data


def _storage_for(args) -> str:
    """The study's storage: ``--storage`` (its password, if not in the URL, from
    :data:`~bioplaus.config.STORAGE_PASSWORD_ENV`; libpq's PGPASSFILE also works), else
    the journal file ``<out>/study.journal``."""
    from bioplaus.config import STORAGE_PASSWORD_ENV, storage_with_password

    if args.storage:
        return storage_with_password(args.storage, os.environ.get(STORAGE_PASSWORD_ENV))
    return str(Path(args.out) / "study.journal")


def cmd_study(args) -> None:
    from bioplaus.study import open_storage, run_worker, write_outputs

    settings, data = _settings(args)
    storage_url = _storage_for(args)
    if args.fresh and "://" not in storage_url:
        Path(storage_url).unlink(missing_ok=True)
    liveness = _liveness(args)
    storage = open_storage(storage_url, **liveness)  # an unreachable server: one line, password redacted
    if args.fresh and "://" in storage_url:
        import optuna

        try:
            optuna.delete_study(study_name=settings.study_name, storage=storage)
        except KeyError:
            pass
    study = run_worker(settings, storage, data.X, data.y, data.input_shape, n_jobs=_threads(args.threads),
                       **liveness)
    if not args.worker_only:
        paths = write_outputs(study, settings, Path(args.out))
        print(f"wrote {paths[0]} and {paths[1]}", file=sys.stderr)


def cmd_export(args) -> None:
    from bioplaus.study import open_storage, open_study, write_outputs

    settings, _ = _settings(args)
    study = open_study(settings, open_storage(_storage_for(args)))
    paths = write_outputs(study, settings, Path(args.out))
    print(f"wrote {paths[0]} and {paths[1]}", file=sys.stderr)


def cmd_repeats(args) -> None:
    from bioplaus.data import load_prepared
    from bioplaus.study import run_repeats, sources_from_best

    data = load_prepared(args.data)
    options = _json_arg(args.options)
    best = {}
    for item in args.best or []:
        sampler, _, path = item.partition("=")
        best[sampler] = path
    sources = sources_from_best(best, args.model, options)
    run_repeats(
        dataset=args.dataset or data.name, model=args.model, sources=sources, X=data.X, y=data.y,
        input_shape=data.input_shape, repeats=args.repeats, seed=args.seed, n_folds=args.folds,
        epochs=args.epochs, options=options, time_limit=args.time_limit, n_jobs=_threads(args.threads),
        out_csv=args.out, log=lambda m: print(m, file=sys.stderr, flush=True),
    )


def cmd_transfer(args) -> None:
    from bioplaus.data import load_prepared
    from bioplaus.study.transfer import run_transfer

    data = load_prepared(args.data)
    best: dict[str, dict[str, str]] = {}
    for item in args.best or []:
        key, _, path = item.partition("=")
        dataset, _, sampler = key.partition(":")
        if not path or not sampler:
            raise ConfigError(f"--best {item!r}: expected DATASET:SAMPLER=path/to/best.json")
        best.setdefault(dataset, {})[sampler] = path
    options = _json_arg(args.options)
    run_transfer(
        target=args.dataset or data.name, model=args.model, best_by_dataset=best, X=data.X, y=data.y,
        input_shape=data.input_shape, repeats=args.repeats, seed=args.seed, n_folds=args.folds,
        epochs=args.epochs, options=options, time_limit=args.time_limit, n_jobs=_threads(args.threads),
        out_csv=args.out, log=lambda m: print(m, file=sys.stderr, flush=True),
    )


def _best_files(items) -> dict:
    """``{sampler: path}`` from ``SAMPLER=path`` arguments."""
    best = {}
    for item in items or []:
        sampler, sep, path = item.partition("=")
        if not sep or not sampler or not path:
            raise ConfigError(f"--best {item!r}: expected SAMPLER=path/to/best.json")
        best[sampler] = path
    return best


def cmd_alignment(args) -> None:
    from bioplaus.data import load_prepared
    from bioplaus.study import sources_from_best
    from bioplaus.study.alignment import run_alignment

    data = load_prepared(args.data)
    options = _json_arg(args.options)
    sources = sources_from_best(_best_files(args.best), args.model, options)
    run_alignment(
        dataset=args.dataset or data.name, model=args.model, sources=sources, X=data.X, y=data.y,
        input_shape=data.input_shape, seed=args.seed, n_folds=args.folds, epochs=args.epochs,
        options=options, repeat=args.repeat, time_limit=args.time_limit, n_jobs=_threads(args.threads),
        out_csv=args.out, log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(f"wrote {args.out}", file=sys.stderr)


def cmd_repair_journal(args) -> None:
    from bioplaus.study.storage import repair_journal

    path = Path(args.journal)
    if not path.is_file():
        raise FileNotFoundError(f"no study journal at {path}")
    dropped = repair_journal(path, truncate=args.truncate)
    print(f"{path}: " + (f"dropped {dropped} bytes (kept beside it)" if dropped else "intact, nothing to do"),
          file=sys.stderr)
