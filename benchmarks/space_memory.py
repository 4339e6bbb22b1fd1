"""Peak memory of each model's most memory-hungry search-space point in a study fold, against the job's ``mem_mb``.

A paper-scale study job (``workflow/profiles/paper``: 3 threads, 3 folds)
is one parent process and ``min(threads, n_folds)`` = 3 fold processes at
once, each training a fresh estimator on 2/3 of the memory-mapped dataset
(``results/data/<dataset>/X.npy``, 70,000 Fashion-MNIST images) by
``partial_fit`` on chunks of rows and testing it by ``predict`` on chunks of
``PREDICT_CHUNK_ROWS`` rows (:func:`bioplaus.study.evaluation.run_fold`). The
job declares ``mem_mb`` = :func:`bioplaus.study.resources.study_mem_mb`, with
the model's declared peak (``ModelSpec.peak_memory_mb``) where it has one.

For every point (``--models``; default every registered model, its largest
point and its default) this script runs, in a fresh process per point, what
one fold process does: every page of the memory map made resident (a fold
reads every row in its first epoch), the model's warm-up, ``partial_fit`` on chunks of the
fold's shuffled training rows that grow as ``run_fold``'s do without a time
limit (one mini-batch, then fourfold per chunk up to ``DEFAULT_CHUNK_ROWS``
rows, :func:`bioplaus.study.evaluation.next_chunk_rows`), until ``--min-chunks``
chunks are done and either two chunks of the largest size were trained or
``--train-seconds`` have passed and one was (the next chunk is then of the
largest size; the state of every model is allocated in its first batch, so
the peak is steady by then); then one test call: the first ``PREDICT_CHUNK_ROWS``
rows of the test fold copied as ``run_fold`` copies them, of which the first
``test_rows`` (per point, below) are predicted (every row of a test call
goes through the same per-chunk buffers, so a few internal chunks give the
call's peak). It measures, not estimates:

* the peak resident set (``VmHWM``, reset between training and test by
  ``/proc/self/clear_refs``) of training and of the test call, and the
  child's ``ru_maxrss``;
* the peak anonymous memory (``RssAnon`` of ``/proc/<pid>/status``, sampled
  every 10 ms from outside): the part that is the process's own, without the
  pages of the memory map and of shared libraries that every process counts.

A parent process is measured the same way: the study command's imports, the
memory map opened, the fold split, and the model's one-off warm-up
(``_warm_up_once``: segdend compiles its kernels there).

The job total is ``parent peak + processes x fold peak`` (resident sets,
conservative: the memory map's pages and the libraries are counted once per
process, as a sum of RSS counts them), set against the declared ``mem_mb``;
beside it, what a cgroup (SLURM, Kubernetes) charges: the processes'
anonymous memory and the shared file pages once.

Largest points (from the code: what scales with which hyperparameter):

* ``mlp``, ``fa``, ``dfa``, ``sign``, ``burstprop``: weights, gradients and
  momentum buffers scale with the widths (6 x 500), activations with
  ``batch x width`` (batch 500); prediction holds ``rows x width``
  activations for ``PREDICT_CHUNK_ROWS`` (or the model's own chunk) rows.
  burstprop with learned recurrent inhibition (``recurrent_input``) also
  holds its ``Z`` matrices.
* ``cnn``: each block keeps, per image of the batch, its convolution output,
  its normalised copy and the pooling masks for the backward pass (``batch x
  conv_h x conv_w x channels``), and builds im2col patches ``(batch x
  positions, k*k*c)`` in chunks of at most ``max_patch_mb`` (64 MiB). The
  maps are largest with kernel 2, padding 3, stride 1 (33 x 33 x 64 after
  the first convolution at batch 500, 5 blocks); the patches per image are
  largest with kernel 10 (which allows only 2 blocks): both are measured.
* ``segdend`` (the paper profile trains at batch 1): the state of a
  simulation holds, per spiking source, a spike ring of ``mem = 10 / dt``
  steps and, per spiking pathway, a ring of projections ``(mem, rows,
  n_out)``; training simulates ``batch_size`` = 1 row, a test call up to
  ``test_batch_size`` = 500 rows side by side. The largest point: 6 x 500,
  ``dt`` 0.1 (mem 100), the longest phases, spiking feedforward and
  feedback, conductances with apical conductance (the test then simulates
  the apical compartments and the spiking feedback too), learned feedback
  weights without broadcast.

    PYTHONPATH=src python benchmarks/space_memory.py                       # every model
    PYTHONPATH=src python benchmarks/space_memory.py --models cnn --points largest
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAPER_STUDY = REPO / "workflow" / "profiles" / "paper" / "study.yaml"

#: per model, the largest point as overrides of the model's default point, and the
#: test rows predicted of the one test call (None: all PREDICT_CHUNK_ROWS)
_DENSE_MAX = {"batch_size": 500, "num_layers": 6, **{f"h_l_{i}": 500 for i in range(1, 7)}}
LARGEST = {
    "mlp": [("largest", _DENSE_MAX, None)],
    "fa": [("largest", {**_DENSE_MAX, "momentum": 0.95}, None)],
    "dfa": [("largest", {**_DENSE_MAX, "momentum": 0.95}, None)],
    "sign": [("largest", {**_DENSE_MAX, "momentum": 0.95}, None)],
    "burstprop": [("largest", {**_DENSE_MAX, "momentum": 0.95, "recurrent_input": True}, None)],
    "cnn": [
        ("largest maps", {"batch_size": 500, "num_layers": 5, **{f"ch_{i}": 64 for i in range(1, 6)},
                          **{f"k_{i}": 2 for i in range(1, 6)}, "stride": 1, "padding": 3}, 1000),
        ("largest kernel", {"batch_size": 500, "num_layers": 2, **{f"ch_{i}": 64 for i in range(1, 6)},
                            **{f"k_{i}": 10 for i in range(1, 6)}, "stride": 1, "padding": 3}, 1000),
        # one block: its patches are small (k*k*c = 4 per position), so a test chunk holds thousands
        # of images, whose 33x33x64 maps are 16 times the patches
        ("one wide block", {"batch_size": 500, "num_layers": 1, **{f"ch_{i}": 64 for i in range(1, 6)},
                            **{f"k_{i}": 2 for i in range(1, 6)}, "stride": 1, "padding": 3}, None),
    ],
    "segdend": [
        ("largest", {"num_layers": 6, **{f"h_l_{i}": 500 for i in range(1, 7)}, "dt": 0.1,
                     "l_f_phase": 50, "l_t_phase": 50, "l_f_phase_test": 100,
                     "use_spiking_feedforward": True, "use_spiking_feedback": True,
                     "use_conductances": True, "use_apical_conductance": True, "g_A": 0.1,
                     "update_feedback_weights": True, "b_etas": 0.01, "use_broadcast": False,
                     "use_feedback_bias": True}, 500),
    ],
}
#: test rows of the default points (None: all)
DEFAULT_TEST_ROWS = {"cnn": 2000, "segdend": None}


def _status():
    """``/proc/self/status`` memory lines in MB."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) / 1024
    return out


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _in_space(spec, params):
    """Raise ValueError unless every value lies in the model's declared search space."""
    from optuna.distributions import CategoricalDistribution

    space = spec.search_space({})
    if set(space) != set(params):
        raise ValueError(f"{spec.name}: keys differ from the space: {sorted(set(space) ^ set(params))}")
    for name, dist in space.items():
        v = params[name]
        ok = v in dist.choices if isinstance(dist, CategoricalDistribution) else dist.low <= v <= dist.high
        if not ok:
            raise ValueError(f"{spec.name}: {name}={v!r} is outside the search space")


def points(models, which):
    """``(model, label, params, test_rows)`` of the requested points (``which``: largest, default, all)."""
    from bioplaus.models import get_model

    out = []
    for model in models:
        spec = get_model(model)
        base = dict(spec.default_params)
        if which in ("default", "all"):
            out.append((model, "default", base, DEFAULT_TEST_ROWS.get(model)))
        if which in ("largest", "all"):
            if model not in LARGEST:
                print(f"# {model}: no largest point declared here; only its default is measured", file=sys.stderr)
                continue
            for label, overrides, test_rows in LARGEST[model]:
                params = {**base, **overrides}
                _in_space(spec, params)
                out.append((model, label, params, test_rows))
    return out


# ---------------------------------------------------------------------------- child processes


def _prepared(data):
    from bioplaus.data import load_prepared

    return load_prepared(data)


def _touch_pages(X):
    """Read one value per 4 KiB of the memory map: each of its pages becomes resident, as after a
    fold's first epoch (which reads every row: the training rows, then the test fold)."""
    flat = X.reshape(-1)
    step = 4096 // X.itemsize
    for a in range(0, flat.size, step * 65536):
        float(flat[a:a + step * 65536:step].sum())


def child_fold(task):
    """What one fold process of a study job does, cut short (see the module docstring); prints JSON."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from bioplaus.models import get_model
    from bioplaus.study.evaluation import (
        DEFAULT_CHUNK_ROWS, PREDICT_CHUNK_ROWS, _batch_size, _chunk_rows, fold_splits, next_chunk_rows,
        split_seed_for,
    )
    from bioplaus.study.seeds import INIT, derive_seed

    data = _prepared(task["data"])
    X, y = data.X, data.y
    classes = np.unique(y)
    train_idx, test_idx = fold_splits(y, task["folds"], split_seed_for(task["seed"]))[0]
    spec = get_model(task["model"])
    seed = derive_seed(task["seed"], INIT, 0)
    _touch_pages(X)  # a fold reads every row of X in its first epoch (training rows, then the test fold)
    base = _status()
    with threadpool_limits(limits=1):
        est = spec.build(dict(task["params"]), input_shape=data.input_shape, n_classes=len(classes),
                         epochs=task["epochs"], random_state=seed, options=dict(task["options"]))
        if spec.warm_up is not None:
            spec.warm_up(est, X[train_idx[:2]], y[train_idx[:2]], classes)
        rng = np.random.default_rng(seed)
        order = train_idx[rng.permutation(len(train_idx))]
        max_chunk = _chunk_rows(est, DEFAULT_CHUNK_ROWS)
        chunk = _batch_size(est)
        chunks, start, at_max = [], 0, 0
        t0 = time.process_time()
        with np.errstate(all="ignore"):
            while start < len(order):
                part = order[start:start + chunk]
                est.partial_fit(X[part], y[part], classes=classes)
                start += len(part)
                chunks.append(len(part))
                at_max += len(part) == max_chunk
                chunk = next_chunk_rows(est, chunk, max_chunk)
                if len(chunks) >= task["min_chunks"]:
                    late = time.process_time() - t0 >= task["train_seconds"]
                    if at_max >= 2 or (late and at_max >= 1):
                        break
                    if late:  # out of time: one chunk of the largest size, whose rows a fold copies
                        chunk = max_chunk
            train_cpu = time.process_time() - t0
            train = _status()
            reset = _reset_peak()
            t1 = time.process_time()
            rows = test_idx[:PREDICT_CHUNK_ROWS]
            X_test = X[rows]  # the copy run_fold's test makes of one predict chunk
            n_test = len(rows) if task["test_rows"] is None else min(len(rows), int(task["test_rows"]))
            est.predict(X_test[:n_test])
            test_cpu = time.process_time() - t1
            test = _status()
    diverged = bool(getattr(est, "diverged_", False))
    print(json.dumps({
        "base": base, "train": train, "test": test, "peak_reset": reset, "diverged": diverged,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "chunks": chunks, "rows_trained": int(start), "train_cpu_s": train_cpu,
        "test_rows": int(n_test), "test_copy_rows": int(len(rows)), "test_cpu_s": test_cpu,
    }))


def child_parent(task):
    """What the parent process of a study job holds: the study command's imports, the memory map, the fold
    split, optuna's and the samplers' modules, and the model's one-off warm-up; prints JSON."""
    import numpy as np
    import optuna  # noqa: F401
    import skopt  # noqa: F401  (the gp sampler)
    from joblib import Parallel  # noqa: F401

    import bioplaus.cli  # noqa: F401
    from bioplaus.study import worker  # noqa: F401
    from bioplaus.study.evaluation import _warm_up_once, fold_splits, split_seed_for

    data = _prepared(task["data"])
    classes = np.unique(data.y)
    splits = fold_splits(data.y, task["folds"], split_seed_for(task["seed"]))
    _warm_up_once(task["model"], task["params"], data.X, data.y, splits[0][0], data.input_shape, classes,
                  task["epochs"], task["options"])
    print(json.dumps({"end": _status(), "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(mode, task):
    """Run ``mode`` (fold or parent) in a fresh single-threaded process, sampling its anonymous memory."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = "1"
    proc = subprocess.Popen([sys.executable, __file__, f"--child-{mode}", json.dumps(task)], env=env,
                            stdout=subprocess.PIPE, text=True)
    peak_anon = peak_rss = 0.0
    path = f"/proc/{proc.pid}/status"
    while proc.poll() is None:
        try:
            with open(path) as fh:
                for line in fh:
                    if line.startswith("RssAnon:"):
                        peak_anon = max(peak_anon, int(line.split()[1]) / 1024)
                    elif line.startswith("VmRSS:"):
                        peak_rss = max(peak_rss, int(line.split()[1]) / 1024)
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child for {task['model']} failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["sampled_anon_mb"], result["sampled_rss_mb"] = peak_anon, peak_rss
    return result


# ---------------------------------------------------------------------------- driver


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    p.add_argument("--points", choices=("largest", "default", "all"), default="all")
    p.add_argument("--dataset", default="fashion")
    p.add_argument("--data", default=None,
                   help="prepared dataset folder (default results/data/<dataset>, prepared if missing)")
    p.add_argument("--data-dir", default=None, help="where the raw files are (default: the data layer's search)")
    p.add_argument("--configfile", default=str(PAPER_STUDY), help="threads, n_folds, model_options, seed")
    p.add_argument("--min-chunks", type=int, default=3)
    p.add_argument("--train-seconds", type=float, default=4.0, help="CPU seconds of training per point (at least)")
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args(argv)

    from bioplaus.config import load_config_file
    from bioplaus.data import dataset_info, prepare
    from bioplaus.models import available_models, get_model
    from bioplaus.study.resources import PER_FOLD_PROCESS_MB, PROCESS_BASE_MB, fold_processes, study_mem_mb

    config = load_config_file(args.configfile)
    threads, folds = int(config.get("threads", 3)), int(config.get("n_folds", 3))
    seed, epochs = int(config.get("seed", 1)), int(config.get("epochs", 10))
    all_options = dict(config.get("model_options") or {})
    data = Path(args.data or REPO / "results" / "data" / args.dataset)
    if not (data / "X.npy").is_file():
        print(f"preparing {args.dataset} into {data}", flush=True)
        prepare(args.dataset, data, data_dir=args.data_dir)
    nbytes = (data / "X.npy").stat().st_size
    info = dataset_info(args.dataset)
    n_proc = fold_processes(threads, folds)
    print(f"{args.dataset}: X.npy {nbytes / 1e6:.0f} MB; a study job at {threads} threads, {folds} folds runs "
          f"{n_proc} fold processes and declares mem_mb = {study_mem_mb(threads, folds, info.prepared_nbytes())} "
          f"plus {n_proc} x the model's declared peak beyond {PER_FOLD_PROCESS_MB - PROCESS_BASE_MB} MB")

    todo = points(args.models or available_models(), args.points)
    rows, parents = [], {}
    for model, label, params, test_rows in todo:
        options = dict(all_options.get(model) or {})
        model_mb = get_model(model).peak_memory_mb(options, info.shape)
        declared = study_mem_mb(threads, folds, info.prepared_nbytes(), model_mb)
        task = {"data": str(data), "model": model, "params": params, "options": options, "folds": folds,
                "seed": seed, "epochs": epochs, "min_chunks": args.min_chunks, "train_seconds": args.train_seconds,
                "test_rows": test_rows}
        key = (model, json.dumps(params, sort_keys=True) if model == "segdend" else "")
        if key not in parents:  # first, so that compiled kernels are cached for the fold (as in a study)
            parents[key] = run_child("parent", task)
        parent = parents[key]
        fold = run_child("fold", task)
        fold_peak = max(fold["train"]["VmHWM"], fold["test"]["VmHWM"], fold["ru_maxrss_mb"]
                        if not fold["peak_reset"] else 0.0)
        parent_peak = parent["ru_maxrss_mb"]
        total = parent_peak + n_proc * fold_peak
        # what a cgroup charges: each process's own (anonymous) memory, the shared file pages once
        charged = parent["sampled_anon_mb"] + n_proc * fold["sampled_anon_mb"] + fold["test"]["RssFile"]
        rec = {"model": model, "point": label, "params": params, "fold": fold, "parent": parent,
               "fold_peak_mb": fold_peak, "parent_peak_mb": parent_peak, "processes": n_proc,
               "job_total_mb": total, "job_charged_mb": charged, "model_mb": model_mb, "declared_mb": declared,
               "ratio": total / declared}
        rows.append(rec)
        print(f"{model:9s} {label:15s} train {fold['train']['VmHWM']:6.0f}  test {fold['test']['VmHWM']:6.0f}  "
              f"anon {fold['sampled_anon_mb']:6.0f}  parent {parent_peak:5.0f}  total {total:6.0f} / {declared} "
              f"= {total / declared:.2f}  ({len(fold['chunks'])} chunks, {fold['rows_trained']} rows, "
              f"{fold['train_cpu_s']:.1f}+{fold['test_cpu_s']:.1f} CPU s{', DIVERGED' if fold['diverged'] else ''})",
              flush=True)

    print(f"\n| model | point | peak MB per fold process (train / test) | of it anon | parent MB "
          f"| job total MB (parent + {n_proc} x fold) | charged once-shared MB | model's declared peak MB "
          f"| declared mem_mb | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = r["fold"]
        print(f"| {r['model']} | {r['point']} | {r['fold_peak_mb']:.0f} ({f['train']['VmHWM']:.0f} / "
              f"{f['test']['VmHWM']:.0f}) | {f['sampled_anon_mb']:.0f} | {r['parent_peak_mb']:.0f} | "
              f"{r['job_total_mb']:.0f} | {r['job_charged_mb']:.0f} | {r['model_mb']:.0f} | {r['declared_mb']} "
              f"| {r['ratio']:.2f} |")
    worst = max(rows, key=lambda r: r["ratio"]) if rows else None
    if worst:
        print(f"\nlargest ratio: {worst['model']} {worst['point']} {worst['ratio']:.2f} "
              f"({'within' if worst['ratio'] <= 1 else 'OVER'} the declared memory)")
    if args.json:
        Path(args.json).write_text(json.dumps({"processes": n_proc, "rows": rows},
                                              indent=1, default=str))
    return 0 if all(r["ratio"] <= 1 for r in rows) else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child-fold":
        child_fold(json.loads(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--child-parent":
        child_parent(json.loads(sys.argv[2]))
    else:
        sys.exit(main())
