"""Fixed cost of a call: ``partial_fit`` on one example and ``predict`` on one row, per model.

What a library user streaming examples one at a time meets: for each model
(``--models``; default segdend at its published non-spiking setting, then the
rate rules fa, dfa, sign, burstprop and the cnn at their default points, each
built by its registry entry from ``default_params`` for 28 x 28 inputs and 10
classes) and each dtype it offers (``--dtypes``), the time of

* ``partial_fit`` on 1 example (median of ``--calls`` consecutive calls) against
  the time per example inside one call on ``--big`` examples (1,000), at the
  model's batch size and at batch size 1 (``set_params(batch_size=1)`` for
  that call only), and the difference from the latter, the fixed overhead of
  a call: a call on one example is one update of batch size 1, so for a rule
  whose default batch is larger (the rate rules: 100) the time per example at
  its own batch size leaves out what a batch-1 step really costs (a
  whole-weight update per example instead of per 100);
* ``predict`` on 1 row against the time per row inside one ``--big``-row call.

Rows are real Fashion-MNIST images, streamed in order. Every estimator is
warmed up first (numba compiles on first use; compiled code is cached on
disk). Each figure is the median over ``--rounds`` rounds (each round's
one-example figure is itself a median of ``--calls`` calls); wall time
(``perf_counter``) and this process's CPU time (``process_time``, less
sensitive to other work on the machine) are both printed, with the load
average before and after.

``--against SRC`` also loads a second copy of the package from the source tree
``SRC`` (e.g. an unpacked older commit's ``src``) and times it interleaved
with this one, round by round in the same process, so that machine load
affects both alike; the ratio old / new is printed. BLAS threads are the
process default unless ``--blas-threads N`` (threadpoolctl) is given; the
models hold BLAS to one thread in their own calls (``bioplaus.models._threads``),
so that only changes what that hold costs per call (a few microseconds).

    python benchmarks/call_overhead.py --models segdend --rounds 5
    git archive HEAD~3 src | tar -x -C /tmp/old
    python benchmarks/call_overhead.py --models segdend --against /tmp/old/src

A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np

MODELS = ("segdend", "fa", "dfa", "sign", "burstprop", "cnn")
INPUT_SHAPE = (1, 28, 28)
N_CLASSES = 10


def load_package(src):
    """A second, independent copy of ``bioplaus`` imported from the source tree ``src``.

    Returns its ``get_model`` (name -> spec). The copy's modules are imported while it is
    installed under the name ``bioplaus`` and then set aside, so this
    process's own ``bioplaus`` is untouched; every model spec is resolved
    before that (the registry imports model modules lazily).
    """
    own = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "bioplaus" or k.startswith("bioplaus.")}
    sys.path.insert(0, str(src))
    try:
        import bioplaus.models.registry as registry

        specs = {name: registry.get_model(name) for name in MODELS}
    finally:
        sys.path.remove(str(src))
        for k in [k for k in sys.modules if k == "bioplaus" or k.startswith("bioplaus.")]:
            sys.modules.pop(k)
        sys.modules.update(own)
    return specs.__getitem__


def build(get_model, name, dtype):
    spec = get_model(name)
    options = {"dtype": dtype} if "dtype" in spec.options else {}
    return spec.build(dict(spec.default_params), input_shape=INPUT_SHAPE, n_classes=N_CLASSES, epochs=1,
                      random_state=0, options=options)


class Rows:
    """Consecutive rows of the training images (wrapping around), in the estimator's dtype."""

    def __init__(self, X, y, dtype):
        self.X, self.y, self.at = X.astype(dtype), y, 0

    def take(self, n):
        if self.at + n > len(self.X):
            self.at = 0
        s = slice(self.at, self.at + n)
        self.at += n
        return self.X[s], self.y[s]


def _timed(func):
    w0, c0 = time.perf_counter(), time.process_time()
    func()
    return time.perf_counter() - w0, time.process_time() - c0


def one_round(est, rows, test, calls, big):
    """ms: (fit 1, fit per example in ``big`` at the model's batch size and at batch size 1, predict 1,
    predict per row in ``big``), as (wall, cpu) pairs."""
    one = []
    for _ in range(calls):
        xb, yb = rows.take(1)
        one.append(_timed(lambda: est.partial_fit(xb, yb)))
    xb, yb = rows.take(big)
    fit_big = _timed(lambda: est.partial_fit(xb, yb))
    batch = est.get_params().get("batch_size", 1)
    if batch == 1:
        fit_big1 = fit_big
    else:  # the same rows' worth of batch-1 steps (the step a one-example call takes)
        xb, yb = rows.take(big)
        est.set_params(batch_size=1)
        try:
            fit_big1 = _timed(lambda: est.partial_fit(xb, yb))
        finally:
            est.set_params(batch_size=batch)
    pred_one = [_timed(lambda i=i: est.predict(test[i:i + 1])) for i in range(calls)]
    pred_big = _timed(lambda: est.predict(test[:big]))
    med = lambda ts: tuple(1e3 * float(np.median([t[k] for t in ts])) for k in (0, 1))  # noqa: E731
    return {"fit1": med(one), "fitN": tuple(1e3 * t / big for t in fit_big),
            "fitN1": tuple(1e3 * t / big for t in fit_big1),
            "pred1": med(pred_one), "predN": tuple(1e3 * t / big for t in pred_big)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--calls", type=int, default=200, help="one-example calls per round")
    parser.add_argument("--big", type=int, default=1000, help="examples of the large call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", default=None, help="source tree of a second copy to time alongside")
    parser.add_argument("--blas-threads", type=int, default=None)
    args = parser.parse_args()

    from bioplaus.data import load_dataset
    from bioplaus.models.registry import get_model

    copies = [("this", get_model)]
    if args.against:
        copies.append(("against", load_package(args.against)))
    X, y = load_dataset("fashion")
    X = X.reshape(len(X), -1)
    train_X, train_y, test_X = X[:60000], y[:60000], X[60000:]
    limits = contextlib.nullcontext()
    if args.blas_threads:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(args.blas_threads)
    print(f"load average {os.getloadavg()[0]:.2f}; BLAS threads: {args.blas_threads or 'default'}; "
          f"ms, median of {args.rounds} rounds (one-call figures: median of {args.calls} calls each), wall / cpu")
    with limits:
        for name in args.models:
            dtypes = args.dtypes if "dtype" in get_model(name).options else ["float32"]
            for dtype in dtypes:
                ests, rowss = [], []
                for _, gm in copies:
                    est = build(gm, name, dtype)
                    rows = Rows(train_X, train_y, dtype)
                    est.partial_fit(*rows.take(10), classes=np.arange(N_CLASSES))  # compiles, if needed
                    est.partial_fit(*rows.take(args.big))
                    est.predict(test_X[:1].astype(dtype))
                    est.predict(test_X[:args.big].astype(dtype))
                    ests.append(est)
                    rowss.append(rows)
                test = test_X[:max(args.big, args.calls)].astype(dtype)
                results = [[] for _ in copies]
                for _ in range(args.rounds):
                    for k, (est, rows) in enumerate(zip(ests, rowss)):
                        results[k].append(one_round(est, rows, test, args.calls, args.big))
                for k, (label, _) in enumerate(copies):
                    m = {key: [float(np.median([r[key][c] for r in results[k]])) for c in (0, 1)]
                         for key in results[k][0]}
                    results[k] = m
                    print(f"{name:9s} {dtype:7s} {label:7s} "
                          f"partial_fit 1: {m['fit1'][0]:7.3f} / {m['fit1'][1]:7.3f}   "
                          f"per example in {args.big}: {m['fitN'][0]:7.4f} / {m['fitN'][1]:7.4f}, "
                          f"at batch 1: {m['fitN1'][0]:7.4f} / {m['fitN1'][1]:7.4f}   "
                          f"overhead {m['fit1'][0] - m['fitN1'][0]:7.3f} / {m['fit1'][1] - m['fitN1'][1]:7.3f}   "
                          f"predict 1: {m['pred1'][0]:6.3f} / {m['pred1'][1]:6.3f}   "
                          f"per row in {args.big}: {m['predN'][0]:7.4f} / {m['predN'][1]:7.4f}", flush=True)
                if len(copies) == 2:
                    new, old = results
                    print(f"{'':17s} against / this: partial_fit 1 x{old['fit1'][0] / new['fit1'][0]:.2f}, "
                          f"overhead {old['fit1'][1] - old['fitN1'][1]:.3f} -> {new['fit1'][1] - new['fitN1'][1]:.3f}"
                          f" ms cpu, predict overhead {old['pred1'][1] - old['predN'][1]:.3f} -> "
                          f"{new['pred1'][1] - new['predN'][1]:.3f} ms cpu, "
                          f"per example x{old['fitN'][0] / new['fitN'][0]:.2f}, "
                          f"predict 1 x{old['pred1'][0] / new['pred1'][0]:.2f} (wall)", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
