"""Cross-validated evaluation: outcomes are recorded, never raised; results do not depend on cores."""

import math

import numpy as np
import pytest

from bioplaus.study.evaluation import evaluate, fold_splits

SHAPE = (1, 8, 8)


def _eval(digits, params, **kw):
    X, y = digits
    kw.setdefault("epochs", 2)
    return evaluate("fake", params, X, y, input_shape=SHAPE, n_folds=3, **kw)


def test_ok_configuration_reports_every_fold(digits):
    res = _eval(digits, {"mode": "ok", "shrink": 1.0})
    assert len(res.folds) == 3
    assert not (res.invalid or res.diverged or res.timed_out or res.error)
    assert res.accuracy == pytest.approx(np.mean([f.accuracy for f in res.folds]))
    assert res.accuracy > 0.8  # nearest class mean on digits
    assert all(f.epochs_completed == 2 for f in res.folds)
    assert res.objective() == res.accuracy


def test_invalid_configuration_is_recorded_and_penalised(digits):
    res = _eval(digits, {"mode": "invalid", "shrink": 1.0})
    assert res.invalid and math.isnan(res.accuracy)
    assert res.objective() == pytest.approx(0.1)  # chance accuracy as the penalty
    assert "shrink and mode clash" in res.message
    rec = res.as_record()
    assert rec["invalid"] is True and rec["accuracy"] is None


def test_divergence_stops_training_and_is_measured(digits):
    res = _eval(digits, {"mode": "diverge", "shrink": 1.0}, epochs=5, chunk_rows=200)
    assert res.diverged and not res.invalid
    assert all(f.epochs_completed < 1 for f in res.folds)  # stopped after the first chunk
    assert res.accuracy == pytest.approx(0.1, abs=0.02)  # the stopped model predicts one class
    assert "diverged" in res.message


def test_numerical_exception_counts_as_divergence(digits):
    res = _eval(digits, {"mode": "nan", "shrink": 1.0})
    assert res.diverged and not res.error
    assert "overflow" in res.message


def test_time_limit_stops_training_and_tests_the_partial_model(digits):
    res = _eval(digits, {"mode": "slow", "shrink": 1.0}, epochs=50, time_limit=0.2,
                options={"sleep": 0.05, "batch_size": 100}, chunk_rows=200)
    assert res.timed_out
    assert all(0 < f.epochs_completed < 50 for f in res.folds)
    assert all(f.fit_seconds < 5 for f in res.folds)
    assert res.accuracy > 0.5  # the partially trained model is still tested
    assert "time limit" in res.message


def test_unexpected_error_is_recorded_with_its_message(digits):
    res = _eval(digits, {"mode": "error", "shrink": 1.0})
    assert res.error and math.isnan(res.accuracy)
    assert "RuntimeError: boom from the fake model" in res.message


def test_chunks_are_whole_batches(digits):
    from bioplaus.study.evaluation import _chunk_rows
    from conftest import NearestMeanClassifier

    assert _chunk_rows(NearestMeanClassifier(batch_size=32), 100) == 128
    assert _chunk_rows(NearestMeanClassifier(batch_size=500), 100) == 500


def test_folds_are_stratified_and_cover_every_row(digits):
    _, y = digits
    splits = fold_splits(y, 3, seed=4)
    test_rows = np.concatenate([te for _, te in splits])
    assert np.array_equal(np.sort(test_rows), np.arange(len(y)))
    for tr, te in splits:
        assert np.intersect1d(tr, te).size == 0
        share = np.bincount(y[te], minlength=10) / np.bincount(y, minlength=10)
        assert np.all(np.abs(share - 1 / 3) < 0.02)


def test_mlp_results_do_not_depend_on_parallel_folds(prepared_digits):
    """Same seeds, same numbers, whether folds run in one process or in two (shared memory map)."""
    from bioplaus.data import load_prepared

    data = load_prepared(prepared_digits)
    assert isinstance(data.X, np.memmap)
    params = {"batch_size": 50, "learning_rate": 0.01, "num_layers": 1,
              **{f"h_l_{i}": 40 for i in range(1, 7)}}
    kw = dict(input_shape=data.input_shape, n_folds=3, epochs=2, split_seed=3, init_seed=5)
    serial = evaluate("mlp", params, data.X, data.y, n_jobs=1, **kw)
    parallel = evaluate("mlp", params, data.X, data.y, n_jobs=2, **kw)
    assert [f.accuracy for f in serial.folds] == [f.accuracy for f in parallel.folds]
    assert serial.accuracy > 0.6
    other = evaluate("mlp", params, data.X, data.y, n_jobs=1, **{**kw, "init_seed": 6})
    assert [f.accuracy for f in other.folds] != [f.accuracy for f in serial.folds]


@pytest.mark.parametrize("model,params", [
    ("mlp", {"batch_size": 32, "learning_rate": 0.01, "num_layers": 1, **{f"h_l_{i}": 30 for i in range(1, 7)}}),
    ("cnn", {"batch_size": 25, "learning_rate": 0.01, "num_layers": 1, "stride": 1, "padding": 1,
             **{f"ch_{i}": 4 for i in range(1, 6)}, **{f"k_{i}": 3 for i in range(1, 6)}}),
])
def test_chunking_never_changes_what_is_learnt(prepared_digits, model, params):
    """Chunk sizes adapt to measured speed; whole-batch chunks make that invisible in the results."""
    from bioplaus.data import load_prepared

    data = load_prepared(prepared_digits)
    kw = dict(input_shape=data.input_shape, n_folds=2, epochs=2, split_seed=1, init_seed=2)
    small = evaluate(model, params, data.X, data.y, chunk_rows=40, **kw)
    large = evaluate(model, params, data.X, data.y, chunk_rows=4096, **kw)
    assert [f.accuracy for f in small.folds] == [f.accuracy for f in large.folds]
    assert small.accuracy > 0.3


def test_warm_up_hook_runs_before_the_clock_and_leaves_the_estimator_alone(digits):
    """One-off costs (compiling kernels) are paid before a fold's CPU time limit starts."""
    import dataclasses
    import time

    from bioplaus.models.registry import _REGISTERED, get_model, register

    calls = []

    def slow_warm_up(est, X, y, classes):
        calls.append((type(est).__name__, X.shape, len(classes)))
        end = time.process_time() + 0.5  # far above the limit below
        while time.process_time() < end:
            pass

    register(dataclasses.replace(get_model("fake"), name="fake-warm", warm_up=slow_warm_up))
    try:
        X, y = digits
        res = evaluate("fake-warm", {"mode": "ok", "shrink": 1.0}, X, y, input_shape=SHAPE, n_folds=3,
                       epochs=2, time_limit=0.3, n_jobs=1)
    finally:
        _REGISTERED.pop("fake-warm", None)
    assert len(calls) == 3 and calls[0] == ("NearestMeanClassifier", (2, 64), 10)
    assert not res.timed_out and all(f.epochs_completed == 2 for f in res.folds)
    assert all(f.fit_seconds < 0.5 for f in res.folds)  # the warm-up is not training time
