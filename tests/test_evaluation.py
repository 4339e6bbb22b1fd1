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
    assert not (res.invalid or res.diverged or res.censored or res.error)
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
    # trained as configured until it diverged: the stopped model's accuracy holds for every epoch
    assert all(f.epoch_accuracies == [f.accuracy] * 5 for f in res.folds)
    assert res.epoch_accuracies[-1] == res.accuracy and not res.censored


def test_where_a_diverged_fold_stops_does_not_depend_on_the_machines_speed(digits, monkeypatch):
    """Without a time limit the chunks, and so the point where divergence is seen, ignore timing."""
    import time as _time
    import types

    from bioplaus.study import evaluation

    def run(seconds_per_call):
        clock = iter(range(10**6))
        fake = types.SimpleNamespace(perf_counter=lambda: next(clock) * seconds_per_call,
                                     process_time=_time.process_time)
        monkeypatch.setattr(evaluation, "time", fake)
        return _eval(digits, {"mode": "diverge", "shrink": 1.0}, epochs=3, n_jobs=1,
                     options={"diverge_after": 700})

    fast, slow = run(1e-6), run(30.0)  # a call seen to take a microsecond, or half a minute
    for res in (fast, slow):
        assert res.diverged and all(f.diverged for f in res.folds)
    assert [f.epochs_completed for f in slow.folds] == [f.epochs_completed for f in fast.folds]
    assert [f.accuracy for f in slow.folds] == [f.accuracy for f in fast.folds]
    assert all(0 < f.epochs_completed < 2 for f in fast.folds)  # stopped inside training, after 700 rows


def test_numerical_exception_counts_as_divergence(digits):
    res = _eval(digits, {"mode": "nan", "shrink": 1.0})
    assert res.diverged and not res.error
    assert "overflow" in res.message


def test_time_limit_censors_the_fold_and_tests_the_partial_model(digits):
    res = _eval(digits, {"mode": "slow", "shrink": 1.0}, epochs=50, time_limit=0.2,
                options={"sleep": 0.05, "batch_size": 100}, chunk_rows=200)
    assert res.censored and res.timed_out  # timed_out: the flag's former name
    assert all(0 < f.epochs_completed < 50 for f in res.folds)
    assert all(f.fit_seconds < 5 for f in res.folds)
    assert res.accuracy > 0.5  # the partially trained model is still tested
    assert "censored: time limit" in res.message
    # the curve holds the whole epochs trained; the mean curve stops where a fold stopped
    for f in res.folds:
        assert len(f.epoch_accuracies) == int(f.epochs_completed)
    rec = res.as_record()
    assert rec["censored"] is True and rec["epochs_completed"] == min(f.epochs_completed for f in res.folds)
    assert len(rec["epoch_accuracies"]) == 50
    whole = int(rec["epochs_completed"])
    assert all(a is not None for a in rec["epoch_accuracies"][:whole])
    assert all(a is None for a in rec["epoch_accuracies"][max(len(f.epoch_accuracies) for f in res.folds):])


def test_a_fold_that_finishes_with_its_last_chunk_is_not_censored(digits):
    """The limit cuts training short; a fold whose last chunk ends past it was not cut short."""
    res = _eval(digits, {"mode": "slow", "shrink": 1.0}, epochs=1, time_limit=0.01,
                options={"sleep": 0.05, "batch_size": 2000}, chunk_rows=4096)
    assert all(f.epochs_completed == 1 for f in res.folds)  # one chunk: the whole epoch
    assert not res.censored and res.epoch_accuracies[-1] == res.accuracy


def test_per_epoch_tests_are_not_training_time(digits, monkeypatch):
    """Testing after each epoch counts neither in fit_seconds nor against the limit."""
    import time as _time

    from bioplaus.study import evaluation

    real = evaluation._accuracy

    def slow_accuracy(est, X, y, idx):  # a test pass that burns far more CPU than the limit
        end = _time.process_time() + 0.3
        while _time.process_time() < end:
            pass
        return real(est, X, y, idx)

    monkeypatch.setattr(evaluation, "_accuracy", slow_accuracy)
    res = _eval(digits, {"mode": "ok", "shrink": 1.0}, epochs=3, time_limit=0.25, n_jobs=1)
    assert not res.censored and all(len(f.epoch_accuracies) == 3 for f in res.folds)
    assert all(f.fit_seconds < 0.25 and f.test_seconds >= 0.85 for f in res.folds)


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
    assert not res.censored and all(f.epochs_completed == 2 for f in res.folds)
    assert all(f.fit_seconds < 0.5 for f in res.folds)  # the warm-up is not training time


_CURVE_CASES = [
    ("mlp", {"batch_size": 32, "learning_rate": 0.01, "num_layers": 1, **{f"h_l_{i}": 30 for i in range(1, 7)}},
     {}),
    ("cnn", {"batch_size": 25, "learning_rate": 0.01, "num_layers": 1, "stride": 1, "padding": 1,
             **{f"ch_{i}": 4 for i in range(1, 6)}, **{f"k_{i}": 3 for i in range(1, 6)}}, {}),
    ("segdend", {"num_layers": 1, "h_l_1": 30}, {"batch_size": 7}),
    ("segdend", {"num_layers": 2, "h_l_1": 20, "h_l_2": 15, "use_spiking_feedforward": True,
                 "use_spiking_feedback": True, "use_rand_plateau_times": False, "l_f_phase": 5,
                 "l_t_phase": 4, "l_f_phase_test": 6}, {"batch_size": 1}),
]


@pytest.mark.parametrize("model,params,options", _CURVE_CASES, ids=["mlp", "cnn", "segdend", "segdend-spiking"])
def test_learning_curve_ends_at_the_accuracy_and_testing_changes_nothing(prepared_digits, model, params, options):
    """Each epoch's test leaves the model as it would be without it: the curve's last point is
    the accuracy of the same training run without intermediate tests, bit for bit, and its
    first point that of one epoch of it (spiking segdend draws random numbers when testing)."""
    from bioplaus.data import load_prepared
    from bioplaus.models import get_model
    from bioplaus.study.seeds import INIT, derive_seed

    spec = get_model(model)
    if model == "segdend":
        params = {k: v for k, v in {**spec.default_params, **params}.items() if k in spec.search_space()}
    data = load_prepared(prepared_digits)
    X, y = data.X, data.y
    res = evaluate(model, params, X, y, input_shape=data.input_shape, n_folds=2, epochs=3, split_seed=1,
                   init_seed=2, options=options, chunk_rows=64)
    assert not (res.invalid or res.error or res.diverged or res.censored)
    classes = np.unique(y)

    def reference(train, test, seed, epochs):  # the plain loop: one partial_fit per epoch, one test
        est = spec.build(dict(params), input_shape=data.input_shape, n_classes=10, epochs=3,
                         random_state=seed, options=dict(options))
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            order = train[rng.permutation(len(train))]
            est.partial_fit(X[order], y[order], classes=classes)
        return float(np.mean(est.predict(X[test]) == y[test]))

    for k, (train, test) in enumerate(fold_splits(y, 2, 1)):
        fold = res.folds[k]
        seed = derive_seed(2, INIT, k)
        assert len(fold.epoch_accuracies) == 3 and fold.epoch_accuracies[-1] == fold.accuracy
        assert fold.accuracy == reference(train, test, seed, 3)
        assert fold.epoch_accuracies[0] == reference(train, test, seed, 1)
    assert res.epoch_accuracies[-1] == res.accuracy
    assert res.epoch_accuracies == [float(np.mean([f.epoch_accuracies[e] for f in res.folds])) for e in range(3)]
    rec = res.as_record()
    assert rec["epoch_accuracies"] == res.epoch_accuracies and rec["epochs_completed"] == 3


def test_epoch_columns_of_the_tables():
    from bioplaus.study.export import epoch_columns

    cols = epoch_columns({"epochs_completed": 1.5, "epoch_accuracies": [0.3, None]}, 3)
    assert cols["epochs_completed"] == 1.5 and cols["accuracy_epoch_1"] == 0.3
    assert math.isnan(cols["accuracy_epoch_2"]) and math.isnan(cols["accuracy_epoch_3"])
    old = epoch_columns({"fold_epochs": [2.0, 1.25, 2.0]}, 2)  # a record of an older storage
    assert old["epochs_completed"] == 1.25 and math.isnan(old["accuracy_epoch_1"])


def test_segdend_online_queue_is_not_cut_by_chunks_or_tests(prepared_digits, monkeypatch):
    """At batch 1 large matrices queue their updates (applied 32 at a time, here 5): chunk ends, whose
    place follows the measured speed, and the per-epoch tests must not apply a queue early, or the
    rounding, and so the numbers, would follow the machine's speed."""
    from bioplaus.data import load_prepared
    from bioplaus.models import SegregatedDendriteClassifier
    from bioplaus.models.registry import get_model
    from bioplaus.models.segdend import state as segdend_state

    monkeypatch.setattr(segdend_state, "DEFER_MIN_SIZE", 1)  # every matrix queued, as large ones are
    monkeypatch.setattr(segdend_state, "DEFER_RANK", 5)
    data = load_prepared(prepared_digits)
    params = dict(get_model("segdend").default_params, h_l_1=30)
    kw = dict(input_shape=data.input_shape, n_folds=2, epochs=2, split_seed=1, init_seed=2, n_jobs=1,
              options={"batch_size": 1})
    scores = []  # every test's class scores, to the bit (accuracies alone rarely see round-off)
    predict = SegregatedDendriteClassifier.predict

    def recording_predict(self, X):
        scores[-1].append(self.class_scores(X).tobytes())
        return predict(self, X)

    monkeypatch.setattr(SegregatedDendriteClassifier, "predict", recording_predict)
    results = []
    for chunk_rows in (7, 4096):
        scores.append([])
        results.append(evaluate("segdend", params, data.X[:300], data.y[:300], chunk_rows=chunk_rows, **kw))
    assert len(scores[0]) >= 4 and scores[0] == scores[1]  # 2 folds x 2 epochs at least
    assert [f.epoch_accuracies for f in results[0].folds] == [f.epoch_accuracies for f in results[1].folds]
