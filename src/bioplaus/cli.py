"""The ``bioplaus`` command: the pipeline's steps, one subcommand each.

Snakemake rules call these subcommands; they can also be run by hand::

    bioplaus datasets | models
    bioplaus download fashion --data-dir data
    bioplaus prepare digits --out results/data/digits
    bioplaus study --data results/data/digits --model mlp --sampler gp --out results/digits/mlp/gp --n-trials 20
    bioplaus export --data ... (write trials.csv/best.json from a study's storage, e.g. while it runs)
    bioplaus repeats ... | summarize ... | figures ... | importance ... | sensitivity ... | compare ...

Errors the user can act on (bad config, missing data, ...) print one message
and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from bioplaus.errors import BioplausError, ConfigError


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


# --------------------------------------------------------------------------- data
def cmd_datasets(args) -> None:
    from bioplaus.data import DATASETS, locate_files

    for name, info in DATASETS.items():
        where = "embedded" if info.embedded else ("found" if locate_files(name, args.data_dir) else "not found locally")
        print(f"{name:10s} {info.label:16s} shape {tuple(info.shape)}  {where}")


def cmd_models(args) -> None:
    from bioplaus.models import available_models, get_model

    for name in available_models():
        try:
            spec = get_model(name)
            print(f"{name:8s} {spec.label:26s} {len(spec.search_space({}))} searched hyperparameters")
        except BioplausError as exc:
            print(f"{name:8s} unavailable: {exc}")


def cmd_download(args) -> None:
    from bioplaus.data import download

    for path in download(args.name, args.data_dir):
        print(path)


def cmd_prepare(args) -> None:
    from bioplaus.data import prepare

    out = prepare(args.name, args.out, data_dir=args.data_dir, max_samples=args.max_samples, seed=args.seed)
    print(f"prepared {args.name} in {out}", file=sys.stderr)


# --------------------------------------------------------------------------- studies
def _settings(args):
    from bioplaus.data import load_prepared
    from bioplaus.study import StudySettings

    data = load_prepared(args.data)
    meta = json.loads((Path(args.data) / "meta.json").read_text())
    fp = f"{meta.get('name')}:n={meta.get('n')}:max_samples={meta.get('max_samples')}:seed={meta.get('seed')}"
    settings = StudySettings(
        dataset=args.dataset or data.name, model=args.model, sampler=args.sampler,
        n_trials=args.n_trials, n_folds=args.folds, epochs=args.epochs, seed=args.seed,
        time_limit=args.time_limit, options=_json_arg(args.options),
        n_initial_points=args.n_initial_points, kappa=args.kappa, data_fingerprint=fp,
    )
    return settings, data


def _storage_for(args) -> str:
    return args.storage or str(Path(args.out) / "study.journal")


def cmd_study(args) -> None:
    from bioplaus.study import open_storage, run_worker, write_outputs

    settings, data = _settings(args)
    storage_url = _storage_for(args)
    if args.fresh:
        if "://" in storage_url:
            import optuna

            try:
                optuna.delete_study(study_name=settings.study_name, storage=storage_url)
            except KeyError:
                pass
        else:
            Path(storage_url).unlink(missing_ok=True)
    liveness = _liveness(args)
    storage = open_storage(storage_url, **liveness)
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


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bioplaus", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("datasets", help="list datasets and whether their files are here")
    s.add_argument("--data-dir", default="data")
    s.set_defaults(func=cmd_datasets)
    s = sub.add_parser("models", help="list registered models")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("download", help="download a dataset's canonical files (checksums verified)")
    s.add_argument("name")
    s.add_argument("--data-dir", default="data")
    s.set_defaults(func=cmd_download)

    s = sub.add_parser("prepare", help="load a dataset once and store it memory-mappable")
    s.add_argument("name")
    s.add_argument("--out", required=True)
    s.add_argument("--data-dir", default="data")
    s.add_argument("--max-samples", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_prepare)

    def study_args(s, with_sampler=True):
        s.add_argument("--data", required=True, help="folder written by `bioplaus prepare`")
        s.add_argument("--dataset", default=None, help="dataset name in tables (default: the prepared one)")
        s.add_argument("--model", required=True)
        if with_sampler:
            s.add_argument("--sampler", required=True, choices=["gp", "tpe", "random"])
        s.add_argument("--out", required=True)
        s.add_argument("--folds", type=int, default=3)
        s.add_argument("--epochs", type=int, default=10)
        s.add_argument("--seed", type=int, default=1)
        s.add_argument("--time-limit", type=float, default=None, help="seconds of training per fold")
        s.add_argument("--options", default="{}", help="model options as a JSON object")
        s.add_argument("--threads", type=int, default=None)

    for cmd, func, helptext in (
        ("study", cmd_study, "run (or resume) one optimisation study"),
        ("export", cmd_export, "write trials.csv and best.json from a study's storage"),
    ):
        s = sub.add_parser(cmd, help=helptext)
        study_args(s)
        s.add_argument("--n-trials", type=int, required=True)
        s.add_argument("--n-initial-points", type=int, default=5)
        s.add_argument("--kappa", type=float, default=2.5)
        s.add_argument("--storage", default=None, help="optuna storage URL (default: <out>/study.journal)")
        if cmd == "study":
            s.add_argument("--fresh", action="store_true", help="discard the stored study and start again")
            s.add_argument("--worker-only", action="store_true", help="run trials, write no outputs")
            s.add_argument("--heartbeat-seconds", type=float, default=None,
                           help=f"seconds between a running trial's heartbeats (default: ${HEARTBEAT_ENV}, "
                                "else the library's default; the same for every worker of a study)")
            s.add_argument("--stale-after-seconds", type=float, default=None,
                           help="a running trial whose heartbeat is this old is taken as dead and re-queued "
                                f"(default: ${STALE_AFTER_ENV}, else the library's default; at least twice "
                                "--heartbeat-seconds)")
        s.set_defaults(func=func)

    s = sub.add_parser("repeats", help="noise floor: re-evaluate default and best configurations")
    study_args(s, with_sampler=False)
    s.add_argument("--repeats", type=int, default=5)
    s.add_argument("--best", nargs="*", help="SAMPLER=path/to/best.json")
    s.set_defaults(func=cmd_repeats)

    from bioplaus import cli_analysis  # unconditional: a broken import must fail, not hide commands

    cli_analysis.add_commands(sub)
    return p


def main(argv=None) -> int:
    import optuna

    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the study logs its own progress lines
    try:
        args.func(args)
    except BioplausError as exc:
        print(f"bioplaus: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:  # bad input files/arguments: one clear line
        if os.environ.get("BIOPLAUS_DEBUG"):
            raise
        print(f"bioplaus: error: {type(exc).__name__}: {exc} (set BIOPLAUS_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bioplaus: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
