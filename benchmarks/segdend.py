"""Speed of the segregated-dendrite simulator: ms per training and per test example.

784-500-10 network at the published settings on Fashion-MNIST inputs, float32,
single-threaded BLAS (threadpoolctl), medians of ``--repeats`` runs:

* non-spiking (2 + 2 training steps, 2 test steps) at batch 1 and batch 100;
* spiking (50 + 50 training steps, 250 test steps, mem 10, conductances,
  spiking feedforward and feedback) at batch 1 and batch 100.

``--cv`` also times one 3-fold x 10-epoch cross-validated evaluation of the
published non-spiking setting on all 70,000 Fashion-MNIST images, on both
cores (two folds run in parallel processes, the third after), as the pipeline
would run it. ``--profile`` splits each training case's time into its parts
(compiled step loop, Python around it, errors, weight updates, reprojection
after an update), timed by wrapping the simulator's functions.

The issue's targets (single thread, ms per training example) are printed
beside the measurements. Usage:
``OMP_NUM_THREADS=1 python benchmarks/segdend.py [--repeats 3] [--cv] [--profile]``
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict

import numpy as np
from threadpoolctl import threadpool_limits

from bioplaus.data import load_dataset
from bioplaus.models.segdend import simulator
from bioplaus.models.segdend.simulator import Simulator
from bioplaus.models.segdend.state import State
from bioplaus.models.segdend import _kernel as kernel
from bioplaus.models.segdend import SegregatedDendriteClassifier

TARGET_TRAIN_MS = {("non-spiking", 1): 0.2, ("non-spiking", 100): 0.03, ("spiking", 1): 4.0, ("spiking", 100): 1.0}
TARGET_TEST_SPEEDUP = 10.0

PUBLISHED_MS = {  # the published code on this machine (issue 3)
    ("non-spiking", "train"): 2.45, ("non-spiking", "test"): 0.87,
    ("spiking", "train"): 35.0, ("spiking", "test"): 81.0,
}

SETTINGS = {
    "non-spiking": dict(),
    "spiking": dict(use_spiking_feedforward=True, use_spiking_feedback=True, use_conductances=True,
                    l_f_phase=50, l_t_phase=50, l_f_phase_test=250, integration_time=20,
                    integration_time_test=220, mem=10),
}


def fashion():
    X, y = load_dataset("fashion")
    return X.reshape(len(X), -1), y


#: the parts of a training step, timed by --profile: (module, function name, label)
PARTS = [(kernel, "phase_steps", "compiled step loop"), (Simulator, "_simulate", "phases (with Python)"),
         (kernel, "local_errors", "local errors"), (kernel, "online_update", "online updates"),
         (simulator, "rank_update", "BLAS weight updates"), (State, "reproject", "reprojection after updates")]


def _timed(func, totals, label):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - t0
    return wrapper


def time_case(X, y, mode, batch, n_train, n_test, repeats, profile):
    train_ms, test_ms = [], []
    for r in range(repeats):
        est = SegregatedDendriteClassifier(hidden_layer_sizes=(500,), batch_size=batch, random_state=r,
                                           **SETTINGS[mode])
        warm = max(batch, 10)
        est.partial_fit(X[:warm], y[:warm], classes=np.arange(10))
        Xtr, ytr = X[warm:warm + n_train], y[warm:warm + n_train]
        t0 = time.perf_counter()
        est.partial_fit(Xtr, ytr)
        train_ms.append((time.perf_counter() - t0) * 1000 / n_train)
        Xte = X[60000:60000 + n_test]
        t0 = time.perf_counter()
        est.predict(Xte)
        test_ms.append((time.perf_counter() - t0) * 1000 / n_test)
    if profile:
        totals = defaultdict(float)
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in PARTS]
        for owner, name, label in PARTS:
            setattr(owner, name, _timed(getattr(owner, name), totals, label))
        try:
            t0 = time.perf_counter()
            est.partial_fit(Xtr, ytr)
            total = time.perf_counter() - t0
        finally:
            for owner, name, func in saved:
                setattr(owner, name, func)
        print(f"  profile of {mode} batch {batch} (ms per training example; nested parts overlap):")
        print(f"    {'all':28s} {total * 1000 / n_train:8.4f}")
        for _, _, label in PARTS:
            print(f"    {label:28s} {totals[label] * 1000 / n_train:8.4f}")
    return float(np.median(train_ms)), float(np.median(test_ms))


def run_cv(X, y):
    """Wall time of one 3-fold x 10-epoch CV evaluation, folds in 2 processes."""
    from concurrent.futures import ProcessPoolExecutor

    from sklearn.model_selection import StratifiedKFold

    folds = list(StratifiedKFold(3, shuffle=True, random_state=1).split(X, y))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        accs = list(pool.map(_fit_fold, [(tr, te) for tr, te in folds]))
    return time.perf_counter() - t0, accs


def _fit_fold(fold):
    tr, te = fold
    X, y = fashion()
    with threadpool_limits(1):
        est = SegregatedDendriteClassifier(hidden_layer_sizes=(500,), epochs=10, random_state=0)
        est.fit(X[tr], y[tr])
        return est.score(X[te], y[te])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cv", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="only the --cv measurement")
    args = parser.parse_args()
    X, y = fashion()
    cases = [("non-spiking", 1, 3000, 10000), ("non-spiking", 100, 20000, 10000),
             ("spiking", 1, 50, 200), ("spiking", 100, 300, 200)]
    print(f"{'mode':12s} {'batch':>5s} {'train ms/ex':>12s} {'target':>7s} {'test ms/ex':>11s} "
          f"{'train speed-up':>15s} {'test speed-up':>14s}")
    with threadpool_limits(1):
        for mode, batch, n_train, n_test in [] if args.skip_speed else cases:
            tr, te = time_case(X, y, mode, batch, n_train, n_test, args.repeats, args.profile)
            target = TARGET_TRAIN_MS[(mode, batch)]
            speedup = PUBLISHED_MS[(mode, 'test')] / te
            print(f"{mode:12s} {batch:5d} {tr:12.4f} {target:7.2f} {te:11.4f} "
                  f"{PUBLISHED_MS[(mode, 'train')] / tr:14.1f}x {speedup:13.1f}x  "
                  f"train {'met' if tr <= target else 'MISSED'}, "
                  f"test {'met' if speedup >= TARGET_TEST_SPEEDUP else 'MISSED'}", flush=True)
    if args.cv:
        wall, accs = run_cv(X, y)
        print(f"3-fold x 10-epoch CV, published non-spiking setting, fashion 70k, 2 cores: "
              f"{wall / 60:.1f} min, fold accuracies {[round(a, 4) for a in accs]}, mean {np.mean(accs):.4f}")


if __name__ == "__main__":
    main()
