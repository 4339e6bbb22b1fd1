"""What the segregated-dendrite estimator keeps between calls changes no number and no error.

``partial_fit`` and ``predict`` keep the validated configuration, the
simulator, the test streams and a small test state between calls, take a
cheap path through the input checks for plain arrays, and know the weights'
finiteness from a magnitude bound instead of reading them again. Here the
same runs go through all of that and through none of it (a subclass that
rebuilds everything, inputs as lists so that scikit-learn converts them,
finiteness read from every weight): weights, losses and predictions must be
bit for bit the same, also when ``set_params`` changes the configuration
between one-example calls; malformed input must raise what scikit-learn's
checks raise.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from raised import raised

from bioplaus.errors import InvalidConfigurationError
from bioplaus.models import SegregatedDendriteClassifier
from bioplaus.models.segdend import simulator as core
from bioplaus.models.segdend import state as segdend_state
from bioplaus.models.segdend.config import ConfigCache, make_config, param_values
from bioplaus.models.segdend.state import Weights


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


class Uncached(SegregatedDendriteClassifier):
    """The estimator with nothing kept between calls: every call validates its parameters,
    builds its simulator, test streams, test state and the compiled loop's arguments anew
    (voltages and spike histories carry over, as they do between examples)."""

    def partial_fit(self, X, y, classes=None):
        if getattr(self, "_state", None) is not None:
            self._state.phase_cache.clear()
        return super().partial_fit(X, y, classes=classes)

    def _config(self, n_in, n_classes):
        return self._make_config(n_in, n_classes)

    def _simulator(self, cfg, dtype):
        return core.Simulator(cfg, dtype)

    def _test_streams(self, dtype):
        return core.RandomStreams(np.random.default_rng(self._test_seed), dtype)

    def _test_state(self, sim, n):
        return None


def _scan_all_finite(weights):
    """Finiteness as read from every array, queued updates included but left queued (no magnitude bound)."""
    def check():
        w = weights.applied()
        return all(np.isfinite(x).all() for x in (*w.WT, *w.b, *w.YT, *w.c) if x is not None)
    return check


def _snapshot(est):
    return [*est.W_, *est.b_, *est.Y_, *(est.c_ or []), np.array(est.loss_curve_),
            np.array([est.n_examples_seen_, est.diverged_])]


def _assert_bitwise(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        u, v = np.asarray(u), np.asarray(v)
        assert u.shape == v.shape and u.dtype == v.dtype
        assert u.tobytes() == v.tobytes(), np.nanmax(np.abs(u.astype(float) - v.astype(float)))


#: set_params between one-example calls (index of the call -> change), covering rates, phases,
#: windows, random phase lengths and plateaus, the backprop and symmetric-feedback controls
#: (which switch the online update away from the queued low-rank path and back), batch size
#: and a rate list later changed in place.
CHANGES = {
    2: dict(use_conductances=True),
    4: dict(g_B=0.5, dt=0.8, E_E=7.0, tau_L=9.0),
    6: dict(f_etas=0.05),
    9: dict(l_f_phase=4, l_t_phase=3, integration_time=2),
    12: dict(use_rand_phase_lengths=True, use_rand_plateau_times=True),
    15: dict(use_backprop=True),
    18: dict(use_backprop=False, f_etas=[0.3, 0.1, 0.2]),
    21: dict(use_symmetric_weights=True),
    24: dict(use_symmetric_weights=False, batch_size=3),
    26: dict(batch_size=1, lambda_max=0.3, use_apical_conductance=True, g_A=0.08),
    30: dict(integration_time=None, l_f_phase_test=3, use_conductances=False),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("deferred", [False, True])
def test_one_example_calls_with_set_params_match_uncached_bit_for_bit(digits, dtype, deferred, monkeypatch):
    if deferred:  # every layer's online updates queued as low-rank sums (as large layers are)
        monkeypatch.setattr(segdend_state, "DEFER_MIN_SIZE", 1)
        monkeypatch.setattr(segdend_state, "DEFER_RANK", 5)
    X, y = digits
    X = X.astype(dtype)
    kw = dict(hidden_layer_sizes=(24, 12), dtype=dtype, random_state=0)
    fast, slow = SegregatedDendriteClassifier(**kw), Uncached(**kw)
    fast.partial_fit(X[:3], y[:3], classes=np.arange(10))
    slow.partial_fit(X[:3].tolist(), y[:3].tolist(), classes=list(range(10)))
    slow._weights.all_finite = _scan_all_finite(slow._weights)
    at, scores = 3, []
    for call in range(36):
        change = CHANGES.get(call)
        if change:
            fast.set_params(**copy.deepcopy(change))
            slow.set_params(**copy.deepcopy(change))
        if call == 28:  # a list parameter changed in place: seen like set_params
            fast.f_etas[0] = slow.f_etas[0] = 0.2
        n = 4 if call in (7, 25) else 1
        fast.partial_fit(X[at:at + n], y[at:at + n])
        slow.partial_fit(X[at:at + n].tolist(), y[at:at + n].tolist())
        at += n
        if call % 5 == 0:
            rows = X[1000:1000 + 1 + call % 3]
            scores.append((fast.class_scores(rows), slow.class_scores(rows.tolist())))
            scores.append((fast.predict(rows[:1]), slow.predict(rows[:1].tolist())))
    scores.append((fast.predict_proba(X[1100:1160]), slow.predict_proba(X[1100:1160])))
    _assert_bitwise(_snapshot(fast), _snapshot(slow))
    for a, b in scores:
        _assert_bitwise([a], [b])
    assert fast.n_examples_seen_ == 3 + 36 + 3 * 2


def test_changes_between_calls_do_change_the_weights(digits):
    """The comparison above has teeth: each kind of change moves the weights (a stale
    configuration would be caught), and the kept configuration is the current one."""
    X, y = digits
    kw = dict(hidden_layer_sizes=(24,), random_state=0, use_conductances=True)  # phases of any length matter
    base = SegregatedDendriteClassifier(**kw).partial_fit(X[:3], y[:3], classes=np.arange(10))
    for change in (dict(f_etas=0.05), dict(l_f_phase=4), dict(lambda_max=0.3), dict(use_backprop=True),
                   dict(use_conductances=False), dict(g_B=0.5), dict(dt=0.7), dict(E_I=-7.0),
                   dict(use_apical_conductance=True)):
        a, b = pickle.loads(pickle.dumps(base)), pickle.loads(pickle.dumps(base))
        a.partial_fit(X[3:4], y[3:4])  # caches filled with the old parameters
        b.partial_fit(X[3:4], y[3:4])
        b.set_params(**change)
        a.partial_fit(X[4:6], y[4:6])
        b.partial_fit(X[4:6], y[4:6])
        assert not np.array_equal(a.W_[0], b.W_[0]), change
        assert b._config(64, 10) == make_config(b.get_params(), 64, 10)


def test_config_cache_sees_every_change():
    params = SegregatedDendriteClassifier(hidden_layer_sizes=(5,), f_etas=[0.1, 0.2]).get_params()
    cache = ConfigCache()
    cfg = make_config(params, 4, 3)
    cache.put(param_values(params), (4, 3), cfg)
    assert cache.get(param_values(params), (4, 3)) is cfg
    assert cache.get(param_values(params), (5, 3)) is None  # another data shape
    params["f_etas"][1] = 0.3  # in place
    assert cache.get(param_values(params), (4, 3)) is None
    plain = SegregatedDendriteClassifier(hidden_layer_sizes=(5,), E_I=0.0).get_params()
    cache.put(param_values(plain), (4, 3), make_config(plain, 4, 3))
    for name, value in (("E_I", -0.0), ("E_I", np.float64(0.0)), ("hidden_layer_sizes", [5]),
                        ("batch_size", True), ("dt", 1)):
        other = dict(plain, **{name: value})
        assert cache.get(param_values(other), (4, 3)) is None, (name, value)
    assert cache.get(param_values(dict(plain)), (4, 3)) is not None  # the same objects


def _weights(dtype, scale):
    rng = np.random.default_rng(0)
    WT = [scale * rng.uniform(-1, 1, (6, 5)).astype(dtype)]
    w = Weights(WT, [np.zeros(5, dtype)], [], [], [])
    w.ensure_pending([0])
    return w


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finiteness_bound_never_misses_an_overflow(dtype):
    big = float(np.finfo(dtype).max)
    outcomes = []
    for scale, q in ((1.0, 1.0), (0.4 * big, 0.2 * big), (0.9 * big, 0.5 * big), (0.3 * big, 1e-3),
                     (1.0, np.inf), (1.0, np.nan)):
        w = _weights(dtype, scale)
        assert w.all_finite()  # read once: the bound is known from now on (unless too large)
        for rank in (1, 3, 2, 1):  # pending updates of several ranks, checked queued, then flushed
            for _ in range(rank):
                m = w.pending_m[0]
                w.pending[0].P[m] = 1.0
                w.pending[0].Q[m] = q / rank
                w.pending_m[0] = m + 1
            before = w.WT[0].copy()
            with np.errstate(all="ignore"):
                finite = w.all_finite()
                assert w.pending_m[0] == rank and w.WT[0].tobytes() == before.tobytes()  # left queued
                truth = bool(np.isfinite(w.applied().WT[0]).all())
                w.flush()
            assert finite == truth == bool(np.isfinite(w.WT[0]).all())
            if w._bounds[0] is not None:
                assert finite and w._bounds[0] >= np.abs(w.WT[0]).max()
            if not finite:
                break
        outcomes.append(finite)
    assert outcomes == [True, False, False, True, False, False]
    w = _weights(dtype, 1.0)
    w.all_finite()
    w.WT[0][0, 0] = np.inf  # an outside write ...
    w.touched([0])  # ... announced, as every writer of WT other than flush does
    assert not w.all_finite()


@pytest.mark.parametrize("kw", [
    dict(hidden_layer_sizes=(24, 12)),
    dict(hidden_layer_sizes=(24,), batch_size=3),
    dict(hidden_layer_sizes=(24, 12), use_backprop=True),
    dict(hidden_layer_sizes=(24, 12), use_symmetric_weights=True),
    dict(hidden_layer_sizes=(16,), use_spiking_feedforward=True, use_conductances=True, l_f_phase=4, l_t_phase=4),
])
def test_bounds_hold_after_every_kind_of_update(digits, kw, monkeypatch):
    monkeypatch.setattr(segdend_state, "DEFER_MIN_SIZE", 1)
    monkeypatch.setattr(segdend_state, "DEFER_RANK", 5)
    X, y = digits
    est = SegregatedDendriteClassifier(random_state=0, **kw).partial_fit(X[:3], y[:3], classes=np.arange(10))
    toggles = {12: "use_backprop", 16: "use_backprop", 20: "use_symmetric_weights", 24: "use_symmetric_weights"}
    for k in range(3, 30):
        if k in toggles:  # away from the queued low-rank updates and back
            est.set_params(**{toggles[k]: not est.get_params()[toggles[k]]})
        est.partial_fit(X[k:k + 1], y[k:k + 1])
        p = est.get_params()
        # every weight written in place (one-example calls run the online rule at any batch_size):
        direct = p["use_backprop"] or p["use_symmetric_weights"] or p["use_spiking_feedforward"]
        w = est._weights
        w.flush()
        for bound, x in zip(w._bounds, w.WT):
            assert bound is None or bound >= np.abs(x).max()
            if direct:  # known again only from reading the matrix at the call's end
                assert bound is None or bound == np.abs(x).max()


# ------------------------------------------------------------------ malformed input




@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits
    return SegregatedDendriteClassifier(hidden_layer_sizes=(8,), random_state=0).partial_fit(
        X[:20], y[:20], classes=np.arange(10))


def _bad_X(X):
    nan, inf = X[:2].copy(), X[:2].copy()
    nan[1, 3], inf[0, 0] = np.nan, np.inf
    return {
        "wrong width": X[:2, :60], "NaN": nan, "inf": inf, "no rows": X[:0], "3-D": X[:2].reshape(2, 8, 8),
        "1-D": X[0], "complex": X[:2].astype(np.complex64), "words": np.full((2, 64), "a", dtype=object),
        "NaN float64": nan.astype(np.float64), "None": np.full((2, 64), None),
    }


def test_malformed_rows_raise_scikit_learns_errors(digits, fitted):
    X, y = digits
    for name, bad in _bad_X(X).items():
        expected = raised(lambda: validate_data(fitted, bad, dtype=[np.float32, np.float64], reset=False))
        assert expected is not None, name
        assert raised(lambda: fitted.predict(bad)) == expected, name
        est = pickle.loads(pickle.dumps(fitted))
        expected = raised(lambda: validate_data(est, bad, y[:len(bad)] if bad.ndim == 2 else y[:1],
                                                        dtype=[np.float32, np.float64], reset=False))
        assert raised(lambda: est.partial_fit(bad, y[:len(bad)] if bad.ndim == 2 else y[:1])) == expected, name
    assert "expecting 64 features" in raised(lambda: fitted.predict(X[:2, :60]))[1]
    assert "Input X contains NaN" in raised(lambda: fitted.predict(_bad_X(X)["NaN"]))[1]


def test_malformed_labels_raise_clear_errors(digits, fitted):
    X, y = digits
    est = pickle.loads(pickle.dumps(fitted))
    W = [w.copy() for w in est.W_]
    assert raised(lambda: est.partial_fit(X[:2], np.array([3, 11]))) == \
        (ValueError, "labels [11] are not in classes=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]")
    assert raised(lambda: est.partial_fit(X[:1], np.array([-1]))) == \
        (ValueError, "labels [-1] are not in classes=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]")
    continuous = np.array([0.5, 1.0])
    expected = raised(lambda: check_classification_targets(continuous))
    assert raised(lambda: est.partial_fit(X[:2], continuous)) == expected
    for bad_y in (np.array([1, 2, 3]), np.array([1.0, np.nan]), np.array([[1, 2], [2, 3]])):
        expected = raised(lambda: validate_data(est, X[:2], bad_y, dtype=[np.float32, np.float64],
                                                        reset=False))
        assert expected is not None
        assert raised(lambda: est.partial_fit(X[:2], bad_y)) == expected
    for a, b in zip(W, est.W_):  # nothing was learnt from rejected calls
        np.testing.assert_array_equal(a, b)
    with pytest.warns(DataConversionWarning):  # a column of labels: accepted, as scikit-learn does
        est.partial_fit(X[:2], np.array([[1], [2]]))


def test_other_dtypes_and_layouts_are_converted_as_before(digits, fitted):
    """Input the cheap path does not take (ints, float16, Fortran order, lists, labels of
    another integer dtype) is converted by scikit-learn, with the same results."""
    X, y = digits
    rows = X[100:103]
    ref = fitted.class_scores(rows)
    for other in (rows.astype(np.float64), rows.astype(np.float16).astype(np.float32), np.asfortranarray(rows),
                  rows.tolist()):
        np.testing.assert_allclose(fitted.class_scores(other), ref, rtol=1e-6)
    ints = (X[100:103] * 16).astype(np.int64)
    np.testing.assert_array_equal(fitted.class_scores(ints), fitted.class_scores(ints.astype(np.float32)))
    a, b = pickle.loads(pickle.dumps(fitted)), pickle.loads(pickle.dumps(fitted))
    a.partial_fit(X[20:22], y[20:22])
    b.partial_fit(X[20:22], y[20:22].astype(np.int32))
    _assert_bitwise(_snapshot(a), _snapshot(b))


def test_pickles_carry_no_caches_and_predict_the_same(digits, fitted):
    X, _ = digits
    fitted.predict(X[:1])
    assert fitted.__dict__["_call_caches"]
    copy = pickle.loads(pickle.dumps(fitted))
    assert copy.__dict__["_call_caches"] == {}
    np.testing.assert_array_equal(copy.class_scores(X[:5]), fitted.class_scores(X[:5]))


def _arrays(obj, seen=None):
    """Every array reachable from a state's attributes (lists, tuples, its sources and pathways),
    with the path to it, except the compiled loop's argument cache."""
    out = {}
    for name, value in vars(obj).items():
        if name == "phase_cache":
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        for i, item in enumerate(items):
            key = f"{name}[{i}]"
            if isinstance(item, np.ndarray):
                out[key] = item
            elif hasattr(item, "__dict__") and not isinstance(item, type):
                out.update({f"{key}.{k}": v for k, v in _arrays(item).items()})
            elif isinstance(item, (int, float, bool, type(None))):
                out[key] = np.asarray(item)
    return out


@pytest.mark.parametrize("kw", [dict(), dict(use_spiking_feedforward=True, use_spiking_feedback=True,
                                             use_conductances=True, use_apical_conductance=True, mem=3)])
def test_a_cleared_test_state_is_a_new_one(digits, kw):
    X, _ = digits
    est = SegregatedDendriteClassifier(hidden_layer_sizes=(12, 8), l_f_phase_test=5, random_state=0, **kw)
    est.partial_fit(X[:4], _[:4], classes=np.arange(10))
    sim = est._simulator(est._test_config(), np.dtype(np.float32))
    used = sim.test_state(3)
    sim.output_scores(est._weights, X[:3], est._test_streams(np.dtype(np.float32)), used)
    used.clear()
    fresh = sim.test_state(3)
    a, b = _arrays(used), _arrays(fresh)
    assert a.keys() == b.keys() and len(a) > 20
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key


def test_test_streams_are_rewound_to_a_fresh_start(digits, fitted):
    X, _ = digits
    dtype = np.dtype(np.float32)
    fitted.predict(X[:3])
    streams = fitted._test_streams(dtype)
    streams.uniform((4, 5))
    streams.rng.normal(size=3)  # testing draws none of these today; they are rewound all the same
    again = fitted._test_streams(dtype)
    fresh = core.RandomStreams(np.random.default_rng(fitted._test_seed), dtype)
    assert again is streams
    assert (again.spike_key, again.spike_counter, again.spike_bits) == \
        (fresh.spike_key, fresh.spike_counter, fresh.spike_bits)
    assert again.rng.bit_generator.state == fresh.rng.bit_generator.state


def test_weights_changed_through_W_views_are_read_again(digits, monkeypatch):
    monkeypatch.setattr(segdend_state, "DEFER_MIN_SIZE", 1)
    X, y = digits
    est = SegregatedDendriteClassifier(hidden_layer_sizes=(12,), random_state=0)
    est.partial_fit(X[:3], y[:3], classes=np.arange(10)).partial_fit(X[3:4], y[3:4])
    assert est._weights._bounds[0] is not None  # known from the last call
    est.W_[0][2, 5] = np.inf
    assert not est._weights.all_finite()


def test_spiking_traces_follow_new_time_constants(digits):
    X, y = digits
    est = SegregatedDendriteClassifier(hidden_layer_sizes=(12,), use_spiking_feedforward=True,
                                       use_spiking_feedback=True, use_conductances=True, l_f_phase=6, l_t_phase=5,
                                       mem=4, random_state=0).partial_fit(X[:2], y[:2], classes=np.arange(10))
    est.set_params(tau_L=8.0, tau_s=2.0).partial_fit(X[2:4], y[2:4])
    st = est._state
    age = (st.step - np.arange(st.mem)) % st.mem
    weights = np.exp(-1.0 / np.array([8.0, 2.0]))[:, None] ** (age + 1)
    for p in (*st.ff, *st.fb):
        if p.proj is not None:  # the traces are the ring's projections under the new decays
            mem, B, n = p.proj.shape
            np.testing.assert_allclose(p.trace.reshape(2, -1), weights @ p.proj.reshape(mem, -1),
                                       rtol=1e-4, atol=1e-5)


def test_broadcast_cannot_change_between_calls_of_a_deep_net(digits):
    """With two hidden layers or more, use_broadcast decides the feedback weights' shapes: a
    change between calls is refused by name (it used to fail inside the compiled loop)."""
    X, y = digits
    deep = SegregatedDendriteClassifier(hidden_layer_sizes=(12, 8), random_state=0)
    deep.partial_fit(X[:3], y[:3], classes=np.arange(10))
    with pytest.raises(InvalidConfigurationError, match="use_broadcast"):
        deep.set_params(use_broadcast=False).partial_fit(X[3:4], y[3:4])
    shallow = SegregatedDendriteClassifier(hidden_layer_sizes=(12,), random_state=0)
    shallow.partial_fit(X[:3], y[:3], classes=np.arange(10))
    shallow.set_params(use_broadcast=False).partial_fit(X[3:4], y[3:4])  # one feedback source either way


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_checks_of_the_weights_agree_with_numpy(dtype):
    from bioplaus.models._finite import entries_finite, every_entry_finite
    from bioplaus.models.segdend import _kernel

    rng = np.random.default_rng(3)
    P, Q = rng.normal(size=(6, 9)).astype(dtype), rng.normal(size=(6, 4)).astype(dtype)
    want = float(np.dot(np.abs(P[1:5]).max(axis=1).astype(float), np.abs(Q[1:5]).max(axis=1).astype(float)))
    assert _kernel.queue_growth(P, Q, 1, 5) == pytest.approx(want, rel=1e-15)
    assert _kernel.queue_growth(P, Q, 3, 3) == 0.0
    for bad in (np.nan, np.inf, -np.inf):
        for where in ((2, 0), (2, 8)):  # first and last entry of a row: a NaN is kept whatever follows
            Pb = P.copy()
            Pb[where] = bad
            assert not np.isfinite(_kernel.queue_growth(Pb, Q, 0, 6))
            assert _kernel.queue_growth(Pb, Q, 3, 6) == pytest.approx(
                float(np.dot(np.abs(P[3:]).max(axis=1).astype(float), np.abs(Q[3:]).max(axis=1).astype(float))))
            x = P.copy()
            x[where] = bad
            assert not entries_finite(x.reshape(-1)) and not every_entry_finite([None, P, x])
    assert entries_finite(P.reshape(-1)) and entries_finite(np.zeros(0, dtype)) and every_entry_finite([P, None])
    big = np.full(5, np.finfo(dtype).max, dtype)
    assert entries_finite(big)  # the largest finite numbers are finite (x * 0 is 0, no overflow)
    # arrays of several kinds in one check (grouped into one compiled call per kind)
    other = np.float64 if dtype == np.float32 else np.float32
    frozen = P.copy()
    frozen.flags.writeable = False
    kinds = [P, Q.astype(other), frozen, P[:, 1], np.zeros((0, 3), dtype), Q.T]
    assert every_entry_finite(kinds)
    for i in range(len(kinds)):
        for bad in (np.nan, np.inf):
            broken = [k.copy() if j == i else k for j, k in enumerate(kinds)]
            if broken[i].size:
                broken[i].reshape(-1)[-1] = bad
                assert not every_entry_finite(broken), (i, bad)


class _UniformOnly:
    """The numbers of a :class:`RandomStreams` offered through ``uniform(shape)`` alone (no spike
    key): the simulator then runs each phase by itself, in blocks of steps, drawing as it goes."""

    def __init__(self, streams):
        self._streams = streams

    def uniform(self, shape):
        return self._streams.uniform(shape)

    def __getattr__(self, name):
        if name == "spike_key":
            raise AttributeError(name)
        return getattr(self._streams, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [
    dict(use_spiking_feedforward=True, use_spiking_feedback=True, use_conductances=True, l_f_phase=7,
         l_t_phase=6, integration_time=3),
    dict(use_spiking_feedback=True, update_feedback_weights=True, use_conductances=True, l_f_phase=6,
         l_t_phase=5, integration_time=2),
    dict(l_f_phase=3, l_t_phase=2, integration_time=1),  # rate mode
], ids=["spiking", "spiking-feedback-learning", "rate"])
def test_both_phases_in_one_call_give_the_numbers_of_one_phase_at_a_time(kw, dtype):
    """A training example's two phases run as one compiled call when the streams generate their
    uniforms in the loop; phase by phase (streams that only offer ``uniform``) they end the same,
    to the bit: weights, state and the step counter."""
    from bioplaus.models.segdend.config import Config
    from bioplaus.models.segdend.simulator import RandomStreams, Simulator
    from bioplaus.models.segdend.state import State, Weights

    cfg = Config(sizes=(30, 14, 9, 10), f_etas=(0.2, 0.2, 0.2), b_etas=(0.05, 0.05), mem=4, **kw)
    rng = np.random.default_rng(0)
    X = rng.random((12, 30)).astype(dtype)
    T = np.eye(10, dtype=dtype)[rng.integers(0, 10, 12)]
    runs = []
    for wrap in (lambda s: s, _UniformOnly):
        w = Weights.initial(cfg, np.random.default_rng(1), dtype)
        sim, st = Simulator(cfg, dtype), State(cfg, 1, dtype)
        st.reproject(w)
        streams = RandomStreams(np.random.default_rng(2), dtype)
        for i in range(12):
            sim.train_batch(st, w, X[i:i + 1], T[i:i + 1], wrap(streams))
        w.flush()
        runs.append((w, st, streams.spike_counter))
    (w1, st1, n1), (w2, st2, n2) = runs
    for a, b in zip(w1.WT + w1.b + w1.YT + st1.C + st1.A, w2.WT + w2.b + w2.YT + st2.C + st2.A):
        assert a.tobytes() == b.tobytes()
    assert st1.step == st2.step and n1 == n2
    assert (n1 > 0) == (cfg.use_spiking_feedforward or cfg.use_spiking_feedback)  # uniforms were drawn
