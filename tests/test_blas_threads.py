"""Same configuration and seed, same numbers, whatever BLAS threads the caller allows.

A product computed by two BLAS threads may round differently from the same
product computed by one; the models therefore hold BLAS to one thread in their
own calls (``bioplaus.models._threads``) and the study's folds run at one
thread whatever ``n_jobs`` is. Each check runs in a fresh interpreter where
OpenBLAS may use two threads (skipped where it cannot: one core), so that
neither this process's thread settings nor its already loaded libraries hide
a difference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bioplaus

#: the bioplaus under test (the subprocess imports the same one)
SRC = Path(bioplaus.__file__).resolve().parents[1]

_PRELUDE = """
import json, sys, numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

def blas_threads():
    return sorted({d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"})

def bits(a):
    a = np.ascontiguousarray(a)
    return a.dtype.str + ":" + a.tobytes().hex()
"""


def _run(body: str) -> dict:
    """Run ``body`` (which prints one JSON object last) in a fresh interpreter with two BLAS threads allowed."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_NUM_THREADS") and k not in ("OMP_THREAD_LIMIT", "OPENBLAS_CORETYPE")}
    env.update(OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    code = _PRELUDE + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _two_threads_or_skip(out):
    if out["available"] != [2]:
        pytest.skip(f"BLAS cannot run two threads here (threads under a limit of 2: {out['available']})")


def test_a_blas_library_loaded_after_the_first_call_is_held_too():
    """The cached controller sees libraries loaded later (SciPy's own OpenBLAS, loaded by
    ``scipy.linalg``, is the one numba's ``np.dot`` and ``scipy.linalg.blas`` use)."""
    out = _run("""
        from bioplaus.models._threads import one_blas_thread
        assert "scipy.linalg" not in sys.modules
        with one_blas_thread():  # builds the cache before SciPy's BLAS is loaded
            pass
        import scipy.linalg  # noqa: F401 - loads a second OpenBLAS
        libs = [d for d in threadpool_info() if d["user_api"] == "blas"]
        with threadpool_limits(2):
            available = blas_threads()
            with one_blas_thread():
                held = blas_threads()
            after = blas_threads()
        print(json.dumps({"libraries": len(libs), "available": available, "held": held, "after": after}))
    """)
    if out["libraries"] < 2:
        pytest.skip("SciPy and NumPy share one BLAS library here")
    _two_threads_or_skip(out)
    assert out["held"] == [1]
    assert out["after"] == [2]  # the caller's setting is given back


_MODELS = {
    # the configuration of the defect seen: rate mode, conductances, six hidden layers (float32)
    "segdend": """
        from bioplaus.models.segdend import SegregatedDendriteClassifier
        def make():
            return SegregatedDendriteClassifier(hidden_layer_sizes=(200,) * 6, use_conductances=True,
                                                f_etas=0.1, random_state=1)
        rows = 40
    """,
    "segdend-batch": """
        from bioplaus.models.segdend import SegregatedDendriteClassifier
        def make():
            return SegregatedDendriteClassifier(hidden_layer_sizes=(200, 200), batch_size=100, f_etas=0.1,
                                                random_state=1)
        rows = 300
    """,
    "mlp": """
        from bioplaus.models.registry import get_model
        def make():
            params = {"batch_size": 100, "learning_rate": 1e-3, "num_layers": 2,
                      **{f"h_l_{i}": 300 for i in range(1, 7)}}
            return get_model("mlp").build(params, input_shape=(1, 28, 28), n_classes=10, epochs=1,
                                          random_state=0)
        rows = 300
    """,
    "fa": """
        from bioplaus.models.feedback_alignment import FeedbackAlignmentClassifier
        def make():
            return FeedbackAlignmentClassifier(hidden_layer_sizes=(300, 300), batch_size=100, random_state=0)
        rows = 300
    """,
    "burstprop": """
        from bioplaus.models.burstprop import BurstpropClassifier
        def make():
            return BurstpropClassifier(hidden_layer_sizes=(300, 300), batch_size=100, random_state=0)
        rows = 300
    """,
}


@pytest.mark.parametrize("model", sorted(_MODELS))
def test_training_and_predictions_do_not_depend_on_the_callers_blas_threads(model):
    out = _run(_MODELS[model] + """
        rng = np.random.default_rng(0)
        X = rng.random((rows + 200, 784)).astype(np.float32)
        y = rng.integers(0, 10, rows + 200)
        with threadpool_limits(2):
            available = blas_threads()
        res = {}
        for t in (1, 2):
            with threadpool_limits(t):
                est = make().partial_fit(X[:rows], y[:rows], classes=np.arange(10))
                res[f"trained at {t}"] = bits(est.predict_proba(X[rows:]))
        with threadpool_limits(1):
            est = make().partial_fit(X[:rows], y[:rows], classes=np.arange(10))
        for t in (1, 2):
            with threadpool_limits(t):
                res[f"predicted at {t}"] = bits(est.predict_proba(X[rows:]))
        print(json.dumps({"available": available, **res}))
    """)
    _two_threads_or_skip(out)
    assert out["trained at 1"] == out["trained at 2"]
    assert out["predicted at 1"] == out["predicted at 2"]


def test_alignment_numbers_do_not_depend_on_its_threads():
    """``run_alignment(n_jobs=...)`` (the command's ``--threads``) changes no number."""
    out = _run("""
        from bioplaus.study.alignment import run_alignment
        rng = np.random.default_rng(0)
        X = rng.random((450, 784)).astype(np.float32)
        y = np.tile(np.arange(10), 45)
        from bioplaus.models.registry import get_model
        sources = {"default": {**get_model("fa").default_params, "batch_size": 100, "num_layers": 2,
                               **{f"h_l_{i}": 300 for i in range(1, 7)}}}
        with threadpool_limits(2):
            available = blas_threads()
        frames = {n: run_alignment(dataset="d", model="fa", sources=sources, X=X, y=y, input_shape=(1, 28, 28),
                                   seed=0, n_folds=3, epochs=1, n_jobs=n, log=lambda *a: None)
                  for n in (1, 2)}
        cols = ["angle_deg", "accuracy"]
        print(json.dumps({"available": available,
                          **{str(n): [bits(f[c].to_numpy(np.float64)) for c in cols] for n, f in frames.items()}}))
    """)
    _two_threads_or_skip(out)
    assert out["1"] == out["2"]


def test_folds_run_at_one_blas_thread_whatever_the_caller_and_n_jobs():
    """A probe model sees the BLAS threads of its fold: one, whatever the caller allows; and fold
    scores are the same in process and in parallel fold workers (``evaluate(n_jobs=4)`` with two
    folds once gave each fold two BLAS threads)."""
    out = _run("""
        from sklearn.base import BaseEstimator, ClassifierMixin
        from bioplaus.models.registry import ModelSpec, register
        from bioplaus.study.evaluation import evaluate

        class Probe(ClassifierMixin, BaseEstimator):
            \"\"\"Label 0 while BLAS has run one thread in every call, else label 1.\"\"\"
            def partial_fit(self, X, y, classes=None):
                self.classes_ = np.asarray(classes)
                self.one_ = getattr(self, "one_", True) and blas_threads() == [1]
                return self
            def predict(self, X):
                self.one_ = self.one_ and blas_threads() == [1]
                return np.zeros(len(X), int) if self.one_ else np.ones(len(X), int)

        register(ModelSpec(name="probe", label="probe", build=lambda params, **kw: Probe(),
                           search_space=lambda options=None: {}, default_params={}))
        rng = np.random.default_rng(0)
        X = rng.random((200, 784)).astype(np.float32)
        y = np.repeat([0, 1], [150, 50])
        y10 = np.tile(np.arange(10), 20)
        params = {"batch_size": 20, "learning_rate": 1e-3, "num_layers": 1, **{f"h_l_{i}": 300 for i in range(1, 7)}}
        kw = dict(input_shape=(1, 28, 28), n_folds=2, epochs=1, split_seed=1, init_seed=2)
        with threadpool_limits(2):
            available = blas_threads()
            probe = [f.accuracy for f in evaluate("probe", {}, X, y, n_jobs=1, **kw).folds]
            scores = {n: [f.accuracy for f in evaluate("mlp", params, X, y10, n_jobs=n, **kw).folds]
                      for n in (1, 4)}
        print(json.dumps({"available": available, "probe": probe, **{str(n): s for n, s in scores.items()}}))
    """)
    _two_threads_or_skip(out)
    assert out["probe"] == [0.75, 0.75]  # label 0 for every row (one thread throughout), 0.25 otherwise
    assert out["1"] == out["4"]
