"""Does our segregated-dendrite simulator learn? Accuracy at the published non-spiking setting.

Modes (all print one line per result):

* ``holdout``: train on the 60,000 Fashion-MNIST training images for
  ``--epochs`` epochs (accuracy on the 10,000 test images after every epoch),
  one run per ``--seeds`` value, then the median over seeds.
* ``cv``: 3-fold stratified cross-validated accuracy on ``--dataset``
  (default ``mnist-5k``) after ``--epochs`` epochs.

Usage::

    python benchmarks/segdend_accuracy.py holdout --epochs 1 --seeds 0 1 2
    python benchmarks/segdend_accuracy.py holdout --epochs 10 --seeds 0
    python benchmarks/segdend_accuracy.py cv --dataset mnist-5k --epochs 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bioplaus.data import load_dataset
from bioplaus.models.segdend import SegregatedDendriteClassifier


def published_setting(seed, batch_size=1, dtype="float32"):
    """One hidden layer of 500, f_eta 0.21, non-spiking, 2-step phases (paper defaults)."""
    return SegregatedDendriteClassifier(hidden_layer_sizes=(500,), f_etas=0.21, batch_size=batch_size,
                                        dtype=dtype, random_state=seed)


def holdout(args):
    X, y = load_dataset("fashion")
    X = X.reshape(len(X), -1)
    Xtr, ytr, Xte, yte = X[:60000], y[:60000], X[60000:], y[60000:]
    finals = []
    for seed in args.seeds:
        model = published_setting(seed, args.batch_size, args.dtype)
        rng = np.random.default_rng(seed)
        classes = np.arange(10)
        for epoch in range(1, args.epochs + 1):
            order = rng.permutation(len(Xtr))
            t0 = time.perf_counter()
            for s in range(0, len(order), 10000):
                idx = order[s:s + 10000]
                model.partial_fit(Xtr[idx], ytr[idx], classes=classes)
            t_train = time.perf_counter() - t0
            t0 = time.perf_counter()
            acc = model.score(Xte, yte)
            t_test = time.perf_counter() - t0
            print(f"holdout fashion seed={seed} batch={args.batch_size} epoch={epoch} test_acc={acc:.4f} "
                  f"train_s={t_train:.1f} test_s={t_test:.1f} diverged={model.diverged_}", flush=True)
        finals.append(acc)
    print(f"holdout fashion epochs={args.epochs} seeds={args.seeds} accs={[round(a, 4) for a in finals]} "
          f"median={np.median(finals):.4f}", flush=True)


def cv(args):
    from sklearn.model_selection import StratifiedKFold

    X, y = load_dataset(args.dataset)
    X = X.reshape(len(X), -1)
    accs = []
    t_all = time.perf_counter()
    for fold, (tr, te) in enumerate(StratifiedKFold(3, shuffle=True, random_state=1).split(X, y)):
        model = published_setting(fold, args.batch_size, args.dtype)
        model.set_params(epochs=args.epochs)
        t0 = time.perf_counter()
        model.fit(X[tr], y[tr])
        acc = model.score(X[te], y[te])
        accs.append(acc)
        print(f"cv {args.dataset} fold={fold} epochs={args.epochs} acc={acc:.4f} "
              f"fit+test_s={time.perf_counter() - t0:.1f}", flush=True)
    print(f"cv {args.dataset} epochs={args.epochs} batch={args.batch_size} mean_acc={np.mean(accs):.4f} "
          f"wall_s={time.perf_counter() - t_all:.1f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["holdout", "cv"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    holdout(args) if args.mode == "holdout" else cv(args)


if __name__ == "__main__":
    main()
