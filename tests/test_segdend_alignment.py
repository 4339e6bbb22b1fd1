"""The segregated-dendrite network's alignment record: the angle between each hidden layer's update
and the one its ``use_backprop`` control would have applied from the same simulated state."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bioplaus.errors import InvalidConfigurationError
from bioplaus.models import SegregatedDendriteClassifier, get_model
from bioplaus.models.segdend import simulator as segdend_simulator
from bioplaus.models.segdend import state as segdend_state
from bioplaus.models.segdend.config import Config
from bioplaus.models.segdend.simulator import RandomStreams, Simulator
from bioplaus.models.segdend.state import State, Weights
from bioplaus.study.alignment import ALIGNMENT_OPTION, supports_alignment

CLASSES = np.arange(10)
SPIKING = dict(use_spiking_feedforward=True, use_spiking_feedback=True, use_conductances=True,
               l_f_phase=6, l_t_phase=5)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def _angle(a, b):
    """Angle in degrees between two arrays taken as flat vectors (float64)."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return np.degrees(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0)))


# ------------------------------------------------------------------ recording changes nothing learnt

@pytest.mark.parametrize("kw, deferred", [
    (dict(hidden_layer_sizes=(12, 9)), False),
    (dict(hidden_layer_sizes=(20,), batch_size=3), False),  # 40 rows: a final partial batch of 1
    (dict(hidden_layer_sizes=(12, 9)), True),  # online updates pending as low-rank sums
    (dict(hidden_layer_sizes=(12, 9), batch_size=2, **SPIKING), False),
    (dict(hidden_layer_sizes=(12, 9), use_backprop=True), False),
    (dict(hidden_layer_sizes=(12, 9), update_feedback_weights=True, b_etas=0.05, use_rand_phase_lengths=True,
          use_rand_plateau_times=True, use_conductances=True, l_f_phase=6, l_t_phase=5), False),
], ids=["rate", "batch3", "deferred", "spiking", "backprop", "random-draws-feedback-learning"])
def test_recording_changes_nothing_learnt(digits, kw, deferred, monkeypatch):
    if deferred:
        monkeypatch.setattr(segdend_state, "DEFER_MIN_SIZE", 1)
        monkeypatch.setattr(segdend_state, "DEFER_RANK", 5)
    X, y = digits
    on = SegregatedDendriteClassifier(random_state=0, record_alignment=True, **kw)
    off = SegregatedDendriteClassifier(random_state=0, **kw)
    for est in (on, off):  # two calls: state and pending updates carry over between them
        est.partial_fit(X[:40], y[:40], classes=CLASSES).partial_fit(X[40:67], y[40:67])
    for a, b in zip(on.W_ + on.b_ + on.Y_, off.W_ + off.b_ + off.Y_):
        np.testing.assert_array_equal(a, b)
    assert on.loss_curve_ == off.loss_curve_
    np.testing.assert_array_equal(on.class_scores(X[100:130]), off.class_scores(X[100:130]))
    np.testing.assert_array_equal(on.predict(X[100:130]), off.predict(X[100:130]))
    assert off.alignment_ == [] and off.alignment_batches_ == []
    n_hidden = len(kw["hidden_layer_sizes"])
    B = kw.get("batch_size", 1)
    assert [a.shape for a in on.alignment_] == [(n_hidden,)] * 2
    assert on.alignment_batches_ == [-(-40 // B), -(-27 // B)]
    assert all(np.isfinite(a).all() and ((a >= 0) & (a <= 180)).all() for a in on.alignment_)


def test_fit_records_one_entry_per_epoch(digits):
    X, y = digits
    est = SegregatedDendriteClassifier(hidden_layer_sizes=(12,), epochs=3, batch_size=4, random_state=1,
                                       record_alignment=True).fit(X[:30], y[:30])
    assert len(est.alignment_) == 3 and est.alignment_batches_ == [8, 8, 8]
    plain = SegregatedDendriteClassifier(hidden_layer_sizes=(12,), epochs=3, batch_size=4, random_state=1).fit(
        X[:30], y[:30])
    for a, b in zip(est.W_, plain.W_):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ the angle is the one of the two updates

@pytest.mark.parametrize("B, mode", [(1, "rate"), (3, "rate"), (2, "spiking"), (1, "deferred")])
def test_angle_between_applied_update_and_the_backprop_controls(B, mode, monkeypatch):
    """Independent check: the same state (copied) trained one batch by the rule and by a
    ``use_backprop`` simulator; the angle of their hidden weight changes is the recorded one."""
    if mode == "deferred":
        monkeypatch.setattr(segdend_state, "DEFER_MIN_SIZE", 1)
        monkeypatch.setattr(segdend_state, "DEFER_RANK", 8)
    extra = dict(use_spiking_feedforward=True, use_spiking_feedback=True, use_conductances=True, l_f_phase=6,
                 l_t_phase=5, integration_time=3) if mode == "spiking" else {}
    cfg = Config(sizes=(64, 12, 9, 10), f_etas=(0.2, 0.2, 0.2), b_etas=(0.0, 0.0), **extra)
    cfg_bp = dataclasses.replace(cfg, use_backprop=True)
    X, y = load_digits(return_X_y=True)
    X, T = X / 16.0, np.eye(10)[y]
    w = Weights.initial(cfg, np.random.default_rng(0), np.float64)
    st, streams = State(cfg, B, np.float64), RandomStreams(np.random.default_rng(1), np.float64)
    st.reproject(w)
    sim, sim_bp = Simulator(cfg, np.float64), Simulator(cfg_bp, np.float64)
    for k in range(3):  # carried-over voltages (and, deferred, pending updates)
        sim.train_batch(st, w, X[k * B:(k + 1) * B], T[k * B:(k + 1) * B], streams)
    if mode == "deferred":
        assert w.pending_m.min() > 0
    rows = slice(3 * B, 4 * B)
    before = copy.deepcopy(w)
    before.flush()
    st_bp, w_bp, streams_bp = copy.deepcopy((st, w, streams))
    record = []
    sim.train_batch(st, w, X[rows], T[rows], streams, alignment=record)
    sim_bp.train_batch(st_bp, w_bp, X[rows], T[rows], streams_bp)
    w.flush()
    expected = [_angle(w.WT[l] - before.WT[l], w_bp.WT[l] - before.WT[l]) for l in range(2)]
    assert len(record) == 1 and record[0].shape == (2,)
    np.testing.assert_allclose(record[0], expected, rtol=0, atol=1e-6)
    assert min(expected) > 1.0  # the rule is not backprop here: the check can tell them apart
    # the output layer's update is the same under both rules (same local output error)
    np.testing.assert_allclose(w.WT[2], w_bp.WT[2], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-3), ("float64", 1e-6)])
@pytest.mark.parametrize("kw", [dict(batch_size=1), dict(batch_size=4), dict(batch_size=2, **SPIKING)],
                         ids=["online", "batch4", "spiking"])
def test_backprop_control_records_zero(digits, dtype, tol, kw):
    X, y = digits
    est = SegregatedDendriteClassifier(hidden_layer_sizes=(12, 9), use_backprop=True, dtype=dtype, random_state=2,
                                       record_alignment=True, **kw).partial_fit(X[:24], y[:24], classes=CLASSES)
    assert len(est.alignment_) == 1
    np.testing.assert_allclose(est.alignment_[0], 0.0, atol=tol)
    rule = SegregatedDendriteClassifier(hidden_layer_sizes=(12, 9), dtype=dtype, random_state=2,
                                        record_alignment=True, **kw).partial_fit(X[:24], y[:24], classes=CLASSES)
    assert (rule.alignment_[0] > 1.0).all() and (rule.alignment_[0] <= 180).all()


# ------------------------------------------------------------------ undefined angles

def test_undefined_angles_are_left_out_of_the_mean(digits):
    """A blank image gives hidden layer 1 no input (a zero update): NaN for that batch, left out."""
    X, y = digits
    rows = np.concatenate([np.zeros((1, 64), np.float32), X[:2]])
    kw = dict(hidden_layer_sizes=(12, 9), random_state=3, record_alignment=True)
    whole = SegregatedDendriteClassifier(**kw).partial_fit(rows, y[:3], classes=CLASSES)
    parts = SegregatedDendriteClassifier(**kw)
    for i in range(3):
        parts.partial_fit(rows[i:i + 1], y[i:i + 1], classes=CLASSES)
    per_batch = np.array(parts.alignment_)
    assert np.isnan(per_batch[0, 0]) and np.isfinite(per_batch[0, 1]) and np.isfinite(per_batch[1:]).all()
    assert whole.alignment_batches_ == [3] and parts.alignment_batches_ == [1, 1, 1]
    np.testing.assert_allclose(whole.alignment_[0], [per_batch[1:, 0].mean(), per_batch[:, 1].mean()],
                               rtol=1e-6)
    blank = SegregatedDendriteClassifier(**kw).partial_fit(rows[:1], y[:1], classes=CLASSES)
    assert np.isnan(blank.alignment_[0][0]) and np.isfinite(blank.alignment_[0][1])
    assert blank.alignment_batches_ == [1]


def test_update_angles_values_and_nan():
    rng = np.random.default_rng(0)
    x, a, b = rng.normal(size=(3, 5)), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    got = segdend_simulator.update_angles([x, x, np.zeros((3, 5))], [a, a, a], [b, -a, b])
    assert got[0] == pytest.approx(_angle(x.T @ a, x.T @ b), abs=1e-9)  # summed matrices, not rows
    assert got[1] == pytest.approx(180.0, abs=1e-6) and np.isnan(got[2])
    assert np.isnan(segdend_simulator.update_angles([x], [np.zeros((3, 4))], [b])[0])
    assert np.isnan(segdend_simulator.update_angles([x], [np.full((3, 4), np.nan)], [b])[0])


# ------------------------------------------------------------------ off: nothing is computed

def test_nothing_extra_is_computed_when_off(digits, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("alignment computed with record_alignment=False")

    monkeypatch.setattr(segdend_simulator, "update_angles", boom)
    monkeypatch.setattr(Simulator, "_backprop_hidden_errors", boom)
    X, y = digits
    for kw in (dict(), dict(use_backprop=True), dict(batch_size=3)):
        est = SegregatedDendriteClassifier(hidden_layer_sizes=(12, 9), random_state=0, **kw)
        est.partial_fit(X[:10], y[:10], classes=CLASSES)
        assert est.alignment_ == []
    with pytest.raises(AssertionError, match="record_alignment=False"):  # the patches are live
        SegregatedDendriteClassifier(hidden_layer_sizes=(12,), record_alignment=True).partial_fit(
            X[:2], y[:2], classes=CLASSES)


# ------------------------------------------------------------------ documentation, spec, validation

def test_documented_declared_and_validated(digits):
    doc = SegregatedDendriteClassifier.__doc__
    assert "record_alignment : bool, default False" in doc
    assert "alignment_ :" in doc and "alignment_batches_ :" in doc
    assert SegregatedDendriteClassifier().get_params()["record_alignment"] is False
    spec = get_model("segdend")
    assert ALIGNMENT_OPTION in spec.options and spec.options[ALIGNMENT_OPTION]["type"] == "boolean"
    assert supports_alignment("segdend")
    build = dict(input_shape=(1, 8, 8), n_classes=10, epochs=1, random_state=0)
    assert spec.build(spec.default_params, **build, options={ALIGNMENT_OPTION: True}).record_alignment is True
    assert spec.build(spec.default_params, **build).record_alignment is False
    X, y = digits
    with pytest.raises(InvalidConfigurationError, match="record_alignment"):
        SegregatedDendriteClassifier(hidden_layer_sizes=(8,), record_alignment="yes").fit(X[:5], y[:5])
