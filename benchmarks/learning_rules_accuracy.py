"""Do the rate-network rules learn at their defaults? Cross-validated accuracy against the backprop MLP.

Each model of ``--models`` is evaluated at its registry ``default_params``
through the pipeline's own :func:`bioplaus.study.evaluation.evaluate` (stratified
``--folds``-fold cross-validation, the same folds for every model, ``--epochs``
passes by chunked ``partial_fit``), on ``--dataset`` subsampled to
``--samples`` images (stratified). Prints one line per model: mean and per-fold
accuracy, training seconds, and whether a fold diverged.

Usage::

    python benchmarks/learning_rules_accuracy.py --dataset fashion --samples 12000 --epochs 5
    python benchmarks/learning_rules_accuracy.py --dataset mnist-5k --epochs 5
"""

from __future__ import annotations

import argparse

from bioplaus.data import dataset_info, load_dataset
from bioplaus.study.evaluation import evaluate
from bioplaus.models import get_model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion")
    ap.add_argument("--samples", type=int, default=None, help="stratified subsample size (default: all)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", nargs="+", default=["mlp", "fa", "dfa", "sign", "burstprop"])
    args = ap.parse_args(argv)
    X, y = load_dataset(args.dataset, max_samples=args.samples, seed=args.seed)
    shape = tuple(dataset_info(args.dataset).shape)
    X = X.reshape(X.shape[0], -1)
    print(f"{args.dataset}: {X.shape[0]} images, {args.folds}-fold CV, {args.epochs} epochs, seed {args.seed}")
    for name in args.models:
        spec = get_model(name)
        res = evaluate(name, dict(spec.default_params), X, y, input_shape=shape, n_folds=args.folds,
                       epochs=args.epochs, split_seed=args.seed, init_seed=args.seed)
        folds = " ".join(f"{f.accuracy:.4f}" for f in res.folds)
        print(f"{name:10s} accuracy {res.accuracy:.4f}  folds [{folds}]  fit {res.fit_seconds:7.1f} s"
              f"  diverged {res.diverged}  {res.message}", flush=True)


if __name__ == "__main__":
    main()
