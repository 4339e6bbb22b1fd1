"""``bioplaus estimate``: the predicted CPU-hours and wall time of a configured study, before running it.

Reads and validates the config (as the Snakefile does), calibrates the cost
model on this machine (a handful of points per model, a few hundred rows of
one of the config's datasets that is available here, single thread) or reads a
saved calibration, and prints :func:`bioplaus.study.cost.predict_study`'s
prediction for ``--cores`` cores: CPU-hours per model and in total, and the
wall time, each with its p10-p90 interval.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from bioplaus.errors import ConfigError

SCHEMA = Path("workflow") / "schemas" / "config.schema.yaml"


def schema_path(configfile: str | os.PathLike) -> Path:
    """The config schema: in the folder of ``configfile`` or above, the working folder or above, or
    the source checkout this package runs from."""
    starts = [Path(configfile).resolve().parent, Path.cwd(), Path(__file__).resolve().parents[3]]
    for start in starts:
        for folder in (start, *start.parents):
            if (folder / SCHEMA).is_file():
                return folder / SCHEMA
    raise ConfigError(f"cannot find {SCHEMA} (looked above {', '.join(map(str, starts))}); "
                      "run bioplaus estimate inside the repository")


def _calibration_dataset(config, requested):
    """The dataset to calibrate on: the one asked for, else the config's dataset with the most
    pixels per image among those available here (embedded, or their files found)."""
    from bioplaus.data import dataset_info, locate_files

    if requested:
        dataset_info(requested)  # an unknown name is a clear error
        return requested
    found = []
    for name in config["datasets"]:
        info = dataset_info(name)
        if info.embedded or locate_files(name, config["data_dir"]):
            found.append((info.n_features, name))
    if not found:
        raise ConfigError(
            f"none of the config's datasets ({', '.join(config['datasets'])}) is available here to calibrate "
            "on: pass --calibration-dataset NAME (one whose files are here, e.g. digits or mnist-5k, which "
            "ship with the package) or `bioplaus download` one first")
    return max(found)[1]


def _hours(seconds: float) -> str:
    """Wall time in s, min or h."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    h = seconds / 3600.0
    return f"{h:.1f} h" if h < 100 else f"{h:.0f} h"


def _cpu_unit(seconds: float) -> tuple[str, float]:
    """A unit for CPU time of this size: CPU-h from one CPU-hour, else CPU-min, else CPU-s."""
    if seconds >= 3600:
        return "CPU-h", 3600.0
    if seconds >= 60:
        return "CPU-min", 60.0
    return "CPU-s", 1.0


def cmd_estimate(args) -> None:
    import numpy as np

    from bioplaus.config import load_config_file, validate_config
    from bioplaus.study.cost import Calibration, calibrate, predict_study

    config = load_config_file(args.configfile)
    validate_config(config, schema_path(args.configfile))
    cores = int(args.cores) if args.cores else (os.cpu_count() or 1)
    if cores < 1:
        raise ConfigError(f"--cores must be at least 1, got {cores}")
    models = list(config["models"])
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    if args.calibration:
        try:
            calibration = Calibration.from_dict(json.loads(Path(args.calibration).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--calibration {args.calibration}: cannot be read: {exc}") from None
        where = f"read from {args.calibration}"
    else:
        from bioplaus.data import dataset_info, load_dataset

        name = _calibration_dataset(config, args.calibration_dataset)
        info = dataset_info(name)
        k = int(args.calibration_examples)
        if k < 2:
            raise ConfigError(f"--calibration-examples must be at least 2, got {k}")
        X, y = load_dataset(name, config["data_dir"], max_samples=min(info.n_samples, max(2 * k, 30)),
                            seed=int(config["seed"]))
        order = np.random.default_rng(int(config["seed"])).permutation(len(X))
        X, y = X.reshape(len(X), -1)[order], y[order]
        k = min(k, len(X) // 2)
        log(f"calibrating {len(models)} models on {k} rows of {name} ({args.calibration_points} points each, "
            "single thread)")
        calibration = calibrate(models, X, y, input_shape=info.shape, rows=k, points=args.calibration_points,
                                seed=int(config["seed"]), options=config.get("model_options") or {}, log=log)
        calibration.dataset = name
        where = f"measured now: {k} rows of {name}, {calibration.cpu_seconds:.1f} CPU s"
        if args.save_calibration:
            Path(args.save_calibration).write_text(json.dumps(calibration.to_dict(), indent=1, default=str))
            log(f"wrote {args.save_calibration}")

    pred = predict_study(config, cores, calibration, repetitions=args.repetitions)

    ds = list(config["datasets"])
    print(f"bioplaus estimate: {args.configfile}: {len(ds)} dataset(s) ({', '.join(ds)}) x {len(models)} models x "
          f"{len(config['samplers'])} sampler(s) ({', '.join(config['samplers'])}); {config['n_trials']} valid trials "
          f"x {config['n_folds']} folds x {config['epochs']} epochs; repeats {config['repeats']}; "
          f"{config['threads']} thread(s) per job; {pred.n_jobs} training jobs")
    fits = ", ".join(f"{m} x{np.exp(calibration.get(m).train.log_sd):.2f}" for m in models)
    print(f"calibration ({where}); spread of the points about each fit (training): {fits}")
    unit, scale = _cpu_unit(pred.total_cpu[1])
    num = lambda s: f"{s / scale:.3g}"  # noqa: E731
    print(f"{'model':<12} {unit + ' p50':>12} {'p10-p90':>19}   valid draws")
    for m in models:
        lo, mid, hi = pred.cpu[m]
        valid = " ".join(f"{d} {100 * pred.valid_fraction[f'{d}/{m}']:.0f}%" for d in ds)
        print(f"{m:<12} {num(mid):>12} {num(lo) + '-' + num(hi):>19}   {valid}")
    lo, mid, hi = pred.total_cpu
    print(f"{'total':<12} {num(mid):>12} {num(lo) + '-' + num(hi):>19}   {unit} "
          f"(expected {num(pred.expected_cpu)} without calibration error)")
    lo, mid, hi = pred.wall
    print(f"wall time on {cores} cores: {_hours(mid)} (p10-p90 {_hours(lo)}-{_hours(hi)}); lower bound "
          f"max(core-hours / cores, longest job): {_hours(pred.wall_bound)}")
    print(f"longest job: {pred.longest_job[0]}, {_hours(pred.longest_job[1])}")
    print("not counted: data preparation, analysis and figure jobs, kernel compilation; a diverged fold stops "
          "early, so spaces that often diverge cost less than predicted")
    for note in pred.notes:
        print(f"note: {note}")
    if args.json:
        Path(args.json).write_text(json.dumps({"prediction": pred.to_dict(), "calibration": calibration.to_dict()},
                                              indent=1, default=str))
        log(f"wrote {args.json}")


def add_command(sub) -> None:
    """Register ``estimate`` on the CLI's subcommand parser."""
    from bioplaus.study.cost import CALIBRATION_POINTS

    s = sub.add_parser("estimate", help="predicted CPU-hours and wall time of a configured study (with interval)")
    s.add_argument("--configfile", default="config.yaml", help="the study's config (default: config.yaml)")
    s.add_argument("--cores", type=int, default=None, help="cores the workflow may use (default: this machine's)")
    s.add_argument("--calibration-examples", type=int, default=300,
                   help="training rows (and as many test rows) per calibration point (default 300)")
    s.add_argument("--calibration-points", type=int, default=CALIBRATION_POINTS,
                   help=f"points timed per model (default {CALIBRATION_POINTS})")
    s.add_argument("--calibration-dataset", default=None,
                   help="dataset to calibrate on (default: the config's largest available here)")
    s.add_argument("--calibration", default=None, metavar="FILE", help="use a saved calibration instead")
    s.add_argument("--save-calibration", default=None, metavar="FILE", help="write the calibration to FILE")
    s.add_argument("--repetitions", type=int, default=200, help="Monte-Carlo repetitions (default 200)")
    s.add_argument("--json", default=None, metavar="PATH", help="write the prediction and calibration to PATH")
    s.set_defaults(func=cmd_estimate)
