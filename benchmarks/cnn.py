"""Speed and accuracy of the NumPy CNN (bioplaus.models.cnn).

Speed (default): training and prediction images per second of the reference's
default architecture (2 blocks, 16 and 32 channels, kernel 5, stride 1,
padding 2) on 28x28 inputs at batch 100, with one thread and with all threads
(``n_jobs``; BLAS is held to one thread per worker either way). Each figure is
the median of ``--repeats`` timed passes; the machine is shared, so the CPU
load average is printed with it. ``--profile`` adds a cProfile of one
single-thread training pass.

Evaluation (``--evaluate DATASET``): one 3-fold x 10-epoch cross-validated
evaluation of the default configuration (stratified folds, train on 2/3,
test on 1/3, ``fit`` with per-epoch shuffling), printing each fold's test
accuracy and wall time, the mean accuracy and the total wall time. Folds run
one after the other with ``--threads`` threads each, or ``--fold-jobs`` at a
time in separate processes (as the pipeline runs them).

Memory (``--memory SHAPE``, SHAPE ``28`` = 1x28x28 or ``32`` = 3x32x32): peak
memory of one training step (``partial_fit`` on one batch) of the search
space's largest configuration: batch 500, 64 channels and kernel 10 in every
block, stride 1, padding 3, as many blocks as fit (2 on 28x28, 3 on 32x32).
Prints the process's peak RSS (``resource.getrusage``; run it in a fresh
process, one SHAPE per run) and tracemalloc's peak of the step.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/cnn.py
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/cnn.py --memory 32
    python benchmarks/cnn.py --evaluate mnist-5k --evaluate fashion --threads 1 --fold-jobs 2
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

import numpy as np

from bioplaus.models import CNNClassifier, get_model

IMAGE_SHAPE = (1, 28, 28)


def load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def default_model(n_jobs, **kwargs):
    spec = get_model("cnn")
    model = spec.build(spec.default_params, input_shape=IMAGE_SHAPE, n_classes=10, epochs=1,
                       random_state=0, options={"n_jobs": n_jobs})
    return model.set_params(**kwargs)


def median_rate(n_images, fn, repeats):
    """Median images per second of ``repeats`` calls of fn (plus CPU seconds per image)."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return n_images / np.median(walls), np.median(cpus) / n_images


def speed(n_images, repeats, profile):
    rng = np.random.default_rng(0)
    X = rng.random((n_images, int(np.prod(IMAGE_SHAPE))), dtype=np.float32)
    y = rng.integers(0, 10, n_images)
    cores = os.cpu_count() or 1
    print(f"default CNN, 28x28 inputs, batch 100, {n_images} images per timed pass, "
          f"median of {repeats}; {cores} cores")
    for n_jobs in sorted({1, cores}):
        model = default_model(n_jobs)
        model.partial_fit(X[:200], y[:200], classes=np.arange(10))  # warm-up, allocations
        load = load_average()
        train, train_cpu = median_rate(n_images, lambda: model.partial_fit(X, y), repeats)
        model.predict(X[:200])
        predict, predict_cpu = median_rate(n_images, lambda: model.predict(X), repeats)
        print(f"threads={n_jobs}: train {train:7.0f} img/s ({train_cpu * 1e3:.2f} CPU ms/img), "
              f"predict {predict:7.0f} img/s ({predict_cpu * 1e3:.2f} CPU ms/img), "
              f"load average before {load:.2f}")
    if profile:
        breakdown(repeats)
        model = default_model(1)
        model.partial_fit(X[:200], y[:200], classes=np.arange(10))
        profiler = cProfile.Profile()
        profiler.enable()
        model.partial_fit(X, y)
        profiler.disable()
        print("\nprofile of one single-thread training pass (tottime):")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(14)


def run_fold(X, y, shape, train, test, epochs, n_jobs, seed):
    """Train the default CNN on rows ``train``, return (test accuracy, fit s, total s, diverged)."""
    spec = get_model("cnn")  # imports the model module before the clock starts
    t0 = time.perf_counter()
    model = spec.build(spec.default_params, input_shape=shape, n_classes=10, epochs=epochs,
                       random_state=seed, options={"n_jobs": n_jobs})
    model.fit(X[train], y[train])
    fit_s = time.perf_counter() - t0
    accuracy = model.score(X[test], y[test])
    return accuracy, fit_s, time.perf_counter() - t0, model.diverged_


def breakdown(repeats):
    """Median milliseconds of each step of one training batch (100 images,
    28x28, default architecture), one thread: where the time goes."""
    from threadpoolctl import threadpool_limits

    from bioplaus.models.cnn import _layers as L

    def ms(fn):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 1e3 * float(np.median(times))

    rng = np.random.default_rng(0)
    rows = []
    with threadpool_limits(1):
        x = rng.random((100, 28, 28, 1), dtype=np.float32)
        for block, (c, f) in enumerate([(1, 16), (16, 32)], start=1):
            weight = rng.standard_normal((5, 5, c, f)).astype(np.float32)
            z, cache = L.conv_forward(x, weight, 1, 2)
            z2 = z.reshape(-1, f)
            gamma, beta = np.ones(f, np.float32), np.zeros(f, np.float32)
            mean = L.column_sums(z2) / z2.shape[0]
            centred, squares = L.batchnorm_centre(z2, mean)
            var = squares / z2.shape[0]
            pooled, bn_cache, pool_cache = L.batchnorm_normalise_relu_pool(
                centred.copy(), var, gamma, beta, 1e-5, z.shape)
            dgamma, dbeta = L.relu_pool_batchnorm_backward_sums(pooled, pool_cache, bn_cache)
            xhat = bn_cache[0].copy()
            dw_ms = ms(lambda: L.conv_backward(z, cache, need_dx=False))
            rows += [
                (block, "conv forward: im2col + product (in chunks)",
                 ms(lambda: L.conv_forward(x, weight, 1, 2))),
                (block, "batch norm statistics (sums, centring)",
                 ms(lambda: L.batchnorm_centre(z2, L.column_sums(z2) / z2.shape[0]))),
                (block, "batch norm scaling + ReLU + max pool forward (compiled)",
                 ms(lambda: L.batchnorm_normalise_relu_pool(centred.copy(), var, gamma, beta, 1e-5,
                                                            z.shape)) - ms(lambda: centred.copy())),
                (block, "ReLU + max pool + batch norm backward (compiled, over xhat)", ms(lambda: (
                    L.relu_pool_batchnorm_backward_sums(pooled, pool_cache, bn_cache),
                    L.relu_pool_batchnorm_backward_dx(pooled, pool_cache, (xhat,) + bn_cache[1:], dgamma,
                                                      dbeta, z2.shape[0])))),
                (block, "conv backward: weight gradient (patches rebuilt if chunked)", dw_ms),
            ]
            if block > 1:
                rows.append((block, "conv backward: input gradient (products + col2im)",
                             ms(lambda: L.conv_backward(z, cache)) - dw_ms))
            x = pooled
    total = sum(t for _, name, t in rows if not name.startswith("  "))
    print("\nwhere the time of one training batch goes (100 images, one thread, ms):")
    for block, name, t in rows:
        share = "" if name.startswith("  ") else f"{100 * t / total:5.1f}%"
        print(f"  block {block}  {name:<62s} {t:7.2f}  {share}")
    print(f"  total of the steps above: {total:.1f} ms per batch -> {1e5 / total:.0f} img/s "
          f"(plus linear layer, loss, Adam)")


def memory(side, n_jobs):
    """Peak RSS and tracemalloc peak (MiB) of one training step of the largest
    configuration on ``side`` x ``side`` images (1 channel for 28, 3 for 32)."""
    import resource
    import tracemalloc

    shape = (1, 28, 28) if side == 28 else (3, side, side)
    n_blocks = 2 if side == 28 else 3
    spec = get_model("cnn")
    params = dict(spec.default_params, batch_size=500, num_layers=n_blocks, stride=1, padding=3,
                  **{f"ch_{i}": 64 for i in range(1, 6)}, **{f"k_{i}": 10 for i in range(1, 6)})
    model = spec.build(params, input_shape=shape, n_classes=10, epochs=1, random_state=0,
                       options={"n_jobs": n_jobs})
    rng = np.random.default_rng(0)
    X = rng.random((500, int(np.prod(shape))), dtype=np.float32)
    y = np.arange(500) % 10
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    tracemalloc.start()
    start = time.perf_counter()
    model.partial_fit(X, y, classes=np.arange(10))
    wall = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"largest CNN on {shape}: {n_blocks} blocks x 64 channels, kernel 10, stride 1, "
          f"padding 3, batch 500, threads={n_jobs}, max_patch_mb="
          f"{model.get_params().get('max_patch_mb', 'n/a')}: one training step {wall:.1f} s, "
          f"peak RSS {rss:.0f} MiB (before the step {rss_before:.0f} MiB), "
          f"tracemalloc peak {traced:.0f} MiB")


def evaluate(dataset, folds, epochs, n_jobs, fold_jobs, seed):
    from joblib import Parallel, delayed
    from sklearn.model_selection import StratifiedKFold

    from bioplaus.data import load_dataset

    X, y = load_dataset(dataset)
    shape = X.shape[1:]
    X = X.reshape(len(X), -1)  # the pipeline's flat rows
    print(f"{dataset}: {len(X)} images {shape}, {folds}-fold CV, {epochs} epochs, default CNN, "
          f"{fold_jobs} fold(s) at a time x {n_jobs} thread(s)", flush=True)
    start = time.perf_counter()
    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(X, y))
    results = Parallel(n_jobs=fold_jobs)(
        delayed(run_fold)(X, y, shape, train, test, epochs, n_jobs, seed + fold)
        for fold, (train, test) in enumerate(splits))
    accuracies = []
    for fold, ((train, _), (accuracy, fit_s, total_s, diverged)) in enumerate(zip(splits, results)):
        accuracies.append(accuracy)
        print(f"  fold {fold}: accuracy {accuracy:.4f}, train {fit_s:.0f} s "
              f"({len(train) * epochs / fit_s:.0f} img/s), with test {total_s:.0f} s, "
              f"diverged={diverged}")
    total = time.perf_counter() - start
    print(f"{dataset}: mean accuracy {np.mean(accuracies):.4f} "
          f"(folds {', '.join(f'{a:.4f}' for a in accuracies)}), wall time {total:.0f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3000, help="images per timed pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--evaluate", action="append", default=[], metavar="DATASET",
                        help="run a cross-validated evaluation (e.g. fashion, mnist-5k) "
                             "instead of the speed figures")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads per fold (n_jobs)")
    parser.add_argument("--fold-jobs", type=int, default=1,
                        help="folds trained at once in separate processes (as the pipeline)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory", type=int, choices=(28, 32), metavar="SHAPE",
                        help="peak memory of one training step of the largest configuration "
                             "on 28 (1x28x28) or 32 (3x32x32) images instead of the speed "
                             "figures (uses --threads)")
    args = parser.parse_args(argv)
    if args.memory:
        memory(args.memory, args.threads)
    elif args.evaluate:
        for dataset in args.evaluate:
            evaluate(dataset, args.folds, args.epochs, args.threads, args.fold_jobs, args.seed)
    else:
        speed(args.images, args.repeats, args.profile)


if __name__ == "__main__":
    main()
