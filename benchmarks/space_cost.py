"""Cost of the whole search space: random valid points of each model, timed, extrapolated, set against a roofline.

For each model (``--models``, default every registered one), the first
``--points`` valid draws of a ``random``-sampler study seeded ``--seed`` (the
study's own draws and validity checks: :func:`bioplaus.study.cost.valid_points`;
a point that turns out invalid in training is counted and skipped) are trained
single-threaded for one pass over ``--examples`` real Fashion-MNIST rows and
tested on as many others (:func:`bioplaus.study.cost.time_point`: CPU time by
``time.process_time``, BLAS held to one thread, the model's warm-up untimed).
Model options come from ``--configfile`` (default: the paper-scale profile's
``model_options``, e.g. segdend at batch 1).

Printed per point: CPU ms per training and per test example, the
extrapolated paper-scale CPU-hours of one evaluation (``--folds`` folds x
``--epochs`` epochs on ``--samples`` images, each fold training on
``(k-1)/k`` of them and testing on the rest after every epoch) and the
roofline: the time bound ``bytes / bandwidth + flops / GEMM rate + randoms /
generator rate`` of the work counts of :func:`bioplaus.study.cost.point_work`
at the batch the point ran with, and the ratio measured / bound. Per model:
p10 / p50 / p90 / max / mean of the per-evaluation CPU-hours, and per study
(``--trials`` valid trials) ``trials x mean`` with a bootstrap p10-p90.

The three machine rates are measured first and printed
(:func:`bioplaus.study.cost.machine_rates`): on a machine shared with other
work they are noisy, so print them with every run.

    python benchmarks/space_cost.py --models segdend cnn --points 40 --examples 500 --json space.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bioplaus.config import load_config_file
from bioplaus.data import load_dataset
from bioplaus.errors import InvalidConfigurationError
from bioplaus.models import available_models
from bioplaus.study.cost import (
    draw_points, evaluation_cpu_seconds, machine_rates, point_work, roofline_seconds, time_point,
)

REPO = Path(__file__).resolve().parents[1]
PAPER_STUDY = REPO / "workflow" / "profiles" / "paper" / "study.yaml"


def summary(values):
    v = np.asarray(values, float)
    if v.size == 0:
        return {}
    q = np.quantile(v, [0.1, 0.5, 0.9])
    return {"p10": float(q[0]), "p50": float(q[1]), "p90": float(q[2]), "max": float(v.max()), "mean": float(v.mean())}


def run_model(model, X_train, y_train, X_test, args, options, rates, out):
    classes = np.unique(y_train)
    kw = dict(input_shape=(1, 28, 28), n_classes=len(classes), options=options,
              train_rows=len(X_train), test_rows=len(X_test), input_mean=float(X_train.mean()))
    rows, invalid_in_training, draws_used = [], 0, 0
    print(f"\n== {model} (options {json.dumps(options, sort_keys=True)})", flush=True)
    print(f"{'draw':>5} {'train ms/ex':>11} {'test ms/ex':>10} {'CPU-h/eval':>10} "
          f"{'bound tr ms':>11} {'ratio tr':>8} {'bound te ms':>11} {'ratio te':>8}  point")
    # the study's draws in order, until enough are valid (by the model's checks, then in training)
    for draw, params in draw_points(model, args.seed, 50 * args.points, options):
        if len(rows) >= args.points:
            break
        draws_used = draw + 1
        try:
            work = point_work(model, params, **kw)
        except InvalidConfigurationError:
            continue
        try:
            t = time_point(model, params, X_train, y_train, X_test, input_shape=(1, 28, 28), classes=classes,
                           options=options, seed=args.seed)
        except InvalidConfigurationError as exc:
            invalid_in_training += 1
            print(f"{draw:5d} invalid in training: {exc}")
            continue
        cpu_h = evaluation_cpu_seconds(t["train_s"], t["test_s"], args.samples, args.folds, args.epochs) / 3600
        b_tr, b_te = roofline_seconds(work.train, rates), roofline_seconds(work.test, rates)
        rec = {"draw": draw, "params": params, **t, "cpu_h_per_evaluation": cpu_h,
               "bound_train_s": b_tr, "bound_test_s": b_te,
               "ratio_train": t["train_s"] / b_tr if b_tr > 0 else None,
               "ratio_test": t["test_s"] / b_te if b_te > 0 else None,
               "train_batch": work.train_batch, "test_batch": work.test_batch,
               "work_train": vars(work.train) | {"units": work.train.units},
               "work_test": vars(work.test) | {"units": work.test.units}, "counted": work.counted}
        rows.append(rec)
        ratio = lambda x: f"{x:8.1f}" if x is not None else f"{'-':>8}"  # noqa: E731
        print(f"{draw:5d} {1e3 * t['train_s']:11.4f} {1e3 * t['test_s']:10.4f} {cpu_h:10.3f} "
              f"{1e3 * b_tr:11.4f} {ratio(rec['ratio_train'])} {1e3 * b_te:11.4f} {ratio(rec['ratio_test'])}  "
              f"{describe(model, params, work)}{' DIVERGED' if t['diverged'] else ''}", flush=True)
    evals = [r["cpu_h_per_evaluation"] for r in rows]
    dist = summary(evals)
    train_ms = summary([1e3 * r["train_s"] for r in rows])
    rng = np.random.default_rng(args.seed)
    study = None
    if evals:
        sums = rng.choice(np.asarray(evals), size=(2000, args.trials), replace=True).sum(axis=1)
        study = {"trials": args.trials, "expected": args.trials * dist["mean"],
                 "p10": float(np.quantile(sums, 0.1)), "p90": float(np.quantile(sums, 0.9))}
    valid = len(rows)
    print(f"-- {model}: {valid} valid of {draws_used} draws ({invalid_in_training} more invalid in training)")
    if dist:
        print(f"   train ms/example  p10 {train_ms['p10']:.3f}  p50 {train_ms['p50']:.3f}  p90 {train_ms['p90']:.3f}"
              f"  max {train_ms['max']:.3f}  mean {train_ms['mean']:.3f}")
        print(f"   CPU-h/evaluation  p10 {dist['p10']:.3f}  p50 {dist['p50']:.3f}  p90 {dist['p90']:.3f}"
              f"  max {dist['max']:.3f}  mean {dist['mean']:.3f}")
        print(f"   CPU-h/study ({args.trials} valid trials): {study['expected']:.1f} "
              f"(bootstrap p10-p90 {study['p10']:.1f}-{study['p90']:.1f})")
        ratios = [r["ratio_train"] for r in rows if r["ratio_train"] and not r["diverged"]]
        if ratios:  # a diverged point stopped training early: its time is not its work's
            print(f"   measured/bound (train, points that did not diverge)  p50 {np.median(ratios):.1f}  "
                  f"max {max(ratios):.1f}; within 2x: {sum(r <= 2 for r in ratios)} of {len(ratios)}")
    out[model] = {"options": options, "draws": draws_used, "valid": valid,
                  "invalid_in_training": invalid_in_training, "points": rows,
                  "cpu_h_per_evaluation": dist, "train_ms_per_example": train_ms, "study": study}


def describe(model, params, work):
    """A short description of the point's size (layers, phases, switches)."""
    if "num_layers" in params and model != "cnn" and "h_l_1" in params:
        widths = "-".join(str(params[f"h_l_{i}"]) for i in range(1, int(params["num_layers"]) + 1))
        text = f"{widths} b{work.train_batch}"
        if model == "segdend":
            on = [k.replace("use_", "") for k in ("use_spiking_feedforward", "use_spiking_feedback",
                                                   "use_conductances") if params.get(k)]
            text += f" L {params['l_f_phase']}/{params['l_t_phase']}/{params['l_f_phase_test']} dt {params['dt']:.2f}"
            text += (" " + ",".join(on)) if on else ""
        return text
    if model == "cnn":
        n = int(params["num_layers"])
        return (" ".join(f"{params[f'ch_{i}']}x{params[f'k_{i}']}" for i in range(1, n + 1))
                + f" s{params['stride']} p{params['padding']} b{work.train_batch}")
    return f"b{work.train_batch}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    p.add_argument("--points", type=int, default=40, help="valid points per model")
    p.add_argument("--examples", type=int, default=500, help="training rows (and as many test rows) per point")
    p.add_argument("--seed", type=int, default=1, help="study seed of the draws (the paper's is 1)")
    p.add_argument("--trials", type=int, default=50, help="valid trials per study, for CPU-h per study")
    p.add_argument("--samples", type=int, default=70_000, help="images of the paper-scale dataset")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--configfile", default=str(PAPER_STUDY), help="model_options are read from it")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, metavar="PATH", help="write every number to PATH")
    args = p.parse_args(argv)
    models = args.models or available_models()
    config = load_config_file(args.configfile) if args.configfile else {}
    all_options = dict(config.get("model_options") or {})

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (rates are noisy under load)")
    rates = machine_rates()
    print(f"memory bandwidth (numpy copy, read + write): {rates['memory_bytes_per_s'] / 1e9:.2f} GB/s")
    print(f"single-thread float32 GEMM: {rates['gemm_flops_per_s'] / 1e9:.2f} GFLOP/s")
    print(f"numpy Generator.random (float32): {rates['randoms_per_s'] / 1e6:.0f} M numbers/s")

    K = int(args.examples)
    X, y = load_dataset("fashion", args.data_dir, max_samples=max(2 * K, 30), seed=args.seed)
    X = X.reshape(len(X), -1)
    order = np.random.default_rng(args.seed).permutation(len(X))
    X, y = X[order], y[order]
    X_train, y_train, X_test = X[:K], y[:K], X[K:2 * K]
    print(f"data: {K} Fashion-MNIST training rows, {len(X_test)} test rows (mean pixel {X_train.mean():.3f}); "
          f"paper scale: {args.folds} folds x {args.epochs} epochs on {args.samples:,} images")

    out = {"machine_rates": rates, "load_average": os.getloadavg()[0], "examples": K, "seed": args.seed,
           "paper": {"samples": args.samples, "folds": args.folds, "epochs": args.epochs, "trials": args.trials},
           "models": {}}
    t0 = time.process_time()
    for model in models:
        run_model(model, X_train, y_train, X_test, args, dict(all_options.get(model) or {}), rates, out["models"])
    out["cpu_seconds"] = time.process_time() - t0
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
