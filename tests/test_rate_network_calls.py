"""Repeated small calls of the rate-network rules (fa, dfa, sign, burstprop): cheap paths, same numbers.

A later ``partial_fit`` or ``predict`` checks plain float arrays without
scikit-learn's validation, and the finiteness check after training reads a
weight matrix only when its magnitude bound (``models/_finite.py``) is
unknown. These tests hold both to the results of the full path: scikit-learn's
checks (list inputs) and every array read for NaN/inf after every call, bit
for bit, with rates changed by ``set_params`` between calls; and malformed
input still raises scikit-learn's (or the estimator's) errors.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from raised import raised

from bioplaus.models import _finite
from bioplaus.models.burstprop import BurstpropClassifier
from bioplaus.models.feedback_alignment import (
    DirectFeedbackAlignmentClassifier, FeedbackAlignmentClassifier, SignSymmetryClassifier)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def _full_path(cls):
    """``cls`` with every finiteness check reading every array, nothing known in between."""
    class Full(cls):
        def _all_finite(self):
            arrays = [*self._W, *self._b, *getattr(self, "_Z", [])]
            if isinstance(self, BurstpropClassifier) and not self.recurrent_input:
                arrays = [*self._W, *self._b, *self._Z]
            ok = all(np.isfinite(a).all() for a in arrays)
            self._magnitudes = None  # forget every bound
            return ok
    Full.__name__ = f"Full{cls.__name__}"
    return Full


# (class, constructor kwargs, set_params changes applied before some calls)
CASES = {
    "fa": (FeedbackAlignmentClassifier, dict(hidden_layer_sizes=(20,), learning_rate=0.2),
           [dict(learning_rate=0.05), dict(momentum=0.5, batch_size=3)]),
    "dfa": (DirectFeedbackAlignmentClassifier, dict(hidden_layer_sizes=(16, 12), learning_rate=0.1, momentum=0.9),
            [dict(learning_rate=0.3), dict(momentum=0.0), dict(activation="relu")]),
    "sign": (SignSymmetryClassifier, dict(hidden_layer_sizes=(16, 12), learning_rate=0.05, momentum=0.9),
             [dict(learning_rate=0.01, momentum=0.2), dict(batch_size=2)]),
    "burstprop": (BurstpropClassifier, dict(hidden_layer_sizes=(16, 12, 10)),
                  [dict(hidden_lr=1.0, output_lr=0.5), dict(recurrent_input=False),
                   dict(recurrent_input=True, recurrent_lr=0.05, weight_decay=1e-3)]),
    "diverging burstprop": (BurstpropClassifier, dict(hidden_layer_sizes=(16,), batch_size=1),
                            [dict(hidden_lr=1e300, output_lr=1e300, momentum=0.9)]),
    "diverging fa": (FeedbackAlignmentClassifier, dict(hidden_layer_sizes=(16,), activation="relu"),
                     [dict(learning_rate=1e300, momentum=0.9)]),
}


def _state(est):
    out = [*est._W, *est._b, *est._vW, *est._vb, *getattr(est, "_Z", [])]
    out += [b for b in getattr(est, "_B", []) if b is not None]
    return out


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_one_example_calls_with_set_params_match_the_full_path_bit_for_bit(digits, case, dtype):
    X, y = digits
    cls, kw, changes = CASES[case]
    fast = cls(random_state=3, dtype=dtype, **kw)
    full = _full_path(cls)(random_state=3, dtype=dtype, **kw)
    Xd = X.astype(dtype)
    fast.partial_fit(Xd[:5], y[:5], classes=np.arange(10))
    full.partial_fit(Xd[:5].tolist(), y[:5].tolist(), classes=np.arange(10))
    for i in range(5, 125):
        if i % 40 == 0:
            for est in (fast, full):
                est.set_params(**changes[(i // 40 - 1) % len(changes)])
        fast.partial_fit(Xd[i:i + 1], y[i:i + 1])
        full.partial_fit(Xd[i:i + 1].tolist(), y[i:i + 1].tolist())  # scikit-learn's path
        assert fast.diverged_ == full.diverged_, i
    fast.partial_fit(Xd[125:160], y[125:160])
    full.partial_fit(Xd[125:160].tolist(), y[125:160].tolist())
    assert fast.diverged_ == full.diverged_
    assert fast.n_examples_seen_ == full.n_examples_seen_
    assert np.array_equal(np.asarray(fast.loss_curve_), np.asarray(full.loss_curve_), equal_nan=True)
    for a, b in zip(_state(fast), _state(full), strict=True):
        assert _same_bits(a, b)
    T = Xd[1000:1040]
    assert np.array_equal(fast.predict(T), full.predict(T.tolist()))
    assert _same_bits(fast.predict_proba(T), full.predict_proba(T.tolist()))
    for i in range(5):
        assert np.array_equal(fast.predict(T[i:i + 1]), full.predict(T[i:i + 1].tolist()))
    if case == "diverging fa" or (case == "diverging burstprop" and dtype == "float32"):
        assert fast.diverged_


def test_the_bounds_are_used_and_hold(digits):
    """After the first call the end-of-call check reads nothing, and every bound is >= max |x|."""
    X, y = digits
    for est in (BurstpropClassifier(hidden_layer_sizes=(16, 12), random_state=0),
                SignSymmetryClassifier(hidden_layer_sizes=(16, 12), momentum=0.9, random_state=0)):
        est.partial_fit(X[:10], y[:10], classes=np.arange(10))
        for i in range(10, 60):
            est.partial_fit(X[i:i + 1], y[i:i + 1])
        mags = est._magnitudes
        for key, arrays in (("W", est._W), ("b", est._b), ("vW", est._vW), ("vb", est._vb),
                            ("Z", getattr(est, "_Z", []))):
            if key not in mags:
                continue
            for bound, a in zip(mags[key], arrays, strict=True):
                assert bound is not None and bound >= float(np.abs(a).max())
        assert all(m is not None for m in mags["W"])


def test_the_bound_never_misses_an_overflow():
    """float32 weights driven to inf by a huge rate: the check says so, as reading them does."""
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 8)).astype(np.float32) * 1e3, rng.integers(0, 3, 40)
    for rate in (1e30, 1e33, 1e36, 3e37):
        fast = FeedbackAlignmentClassifier(hidden_layer_sizes=(4,), activation="relu", batch_size=1,
                                           random_state=0)
        full = _full_path(FeedbackAlignmentClassifier)(hidden_layer_sizes=(4,), activation="relu",
                                                       batch_size=1, random_state=0)
        for est in (fast, full):
            est.partial_fit(X[:2], y[:2], classes=np.arange(3))
            est.set_params(learning_rate=rate)
        for i in range(2, 40):
            fast.partial_fit(X[i:i + 1], y[i:i + 1])
            full.partial_fit(X[i:i + 1], y[i:i + 1])
            assert fast.diverged_ == full.diverged_
        assert fast.loss_curve_ == pytest.approx(full.loss_curve_, nan_ok=True)


def test_grown_and_all_finite():
    assert _finite.grown([1.0, None], 1, np.float32) is None
    assert _finite.grown([np.inf], 1, np.float32) is None
    assert _finite.grown([float(np.finfo(np.float32).max)], 1, np.float32) is None
    assert _finite.grown([1.0, 2.0], 1, np.float32) > 3.0
    bounds = [None, 5.0]
    assert _finite.all_finite([np.array([1.0, -2.0]), np.array([np.nan])], bounds)  # the second is trusted
    assert bounds[0] == 2.0
    assert not _finite.all_finite([np.array([1.0, np.inf])], [None])
    assert _finite.amax(np.array([np.nan, 1.0])) == np.inf




@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits
    return {name: cls(hidden_layer_sizes=(8,), random_state=0).partial_fit(X[:20], y[:20], classes=np.arange(10))
            for name, cls in (("fa", FeedbackAlignmentClassifier), ("burstprop", BurstpropClassifier))}


def _bad_X(X):
    nan, inf = X[:2].copy(), X[:2].copy()
    nan[1, 3], inf[0, 0] = np.nan, np.inf
    return {"wrong width": X[:2, :60], "NaN": nan, "inf": inf, "no rows": X[:0], "3-D": X[:2].reshape(2, 8, 8),
            "1-D": X[0], "complex": X[:2].astype(np.complex64), "words": np.full((2, 64), "a", dtype=object),
            "NaN float32": nan.astype(np.float32), "None": np.full((2, 64), None)}


@pytest.mark.parametrize("name", ["fa", "burstprop"])
def test_malformed_rows_raise_scikit_learns_errors(digits, fitted, name):
    X, y = digits
    est = fitted[name]
    for what, bad in _bad_X(X).items():
        expected = raised(lambda: validate_data(est, bad, dtype=[np.float32, np.float64], reset=False))
        assert expected is not None, what
        assert raised(lambda: est.predict(bad)) == expected, what
        assert raised(lambda: est.predict_proba(bad)) == expected, what
        labels = y[:len(bad)] if getattr(bad, "ndim", 0) > 1 else y[:1]
        got = raised(lambda: est.partial_fit(bad, labels))
        want = raised(lambda: validate_data(est, bad, labels, dtype=[np.float32, np.float64], reset=False))
        assert got is not None and got == want, what
    W = [w.copy() for w in est._W]
    assert all(np.array_equal(a, b) for a, b in zip(W, est._W))  # nothing trained by a refused call


@pytest.mark.parametrize("name", ["fa", "burstprop"])
def test_malformed_labels_raise_clear_errors(digits, fitted, name):
    X, y = digits
    est = fitted[name]
    before = [w.copy() for w in est._W]
    with pytest.raises(ValueError, match=r"labels \[10\] are not in classes"):
        est.partial_fit(X[:2], np.array([1, 10]))
    with pytest.raises(ValueError, match=r"labels \[-1\] are not in classes"):
        est.partial_fit(X[:2], np.array([-1, 3]))
    for bad in (np.array([0.5, 1.0]), y[:2].reshape(2, 1).repeat(2, axis=1), y[:3]):
        expected = raised(lambda: (validate_data(est, X[:2], bad, dtype=[np.float32, np.float64], reset=False),
                                   check_classification_targets(bad)))
        assert expected is not None
        assert raised(lambda: est.partial_fit(X[:2], bad)) == expected
    assert all(np.array_equal(a, b) for a, b in zip(before, est._W))
    # labels of another integer dtype, a float64 model given float32 rows: converted as before
    est.partial_fit(X[:2].astype(np.float32), y[:2].astype(np.int8))


def test_unfitted_predict_says_so():
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        BurstpropClassifier().predict(np.zeros((1, 4)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_outer_of_one_row_is_blas_bit_for_bit(dtype):
    from threadpoolctl import threadpool_limits

    from bioplaus.models._rate_network import batch_outer

    rng = np.random.default_rng(1)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-45, 1e-310, 3e38], dtype=np.float64)
    with threadpool_limits(1, user_api="blas"), np.errstate(all="ignore"):
        for n, m in ((1, 1), (7, 3), (64, 30), (500, 10)):
            h, d = rng.standard_normal((1, n)).astype(dtype), rng.standard_normal((1, m)).astype(dtype)
            h[0, ::3] = rng.choice(specials, h[0, ::3].size).astype(dtype)
            d[0, ::2] = rng.choice(specials, d[0, ::2].size).astype(dtype)
            ref, got = h.T @ d, batch_outer(h, d)
            nan = np.isnan(ref)
            assert np.array_equal(nan, np.isnan(got))
            assert ref[~nan].tobytes() == got[~nan].tobytes()  # signed zeros included
        h2 = rng.standard_normal((3, 5)).astype(dtype)
        assert batch_outer(h2, h2).tobytes() == (h2.T @ h2).tobytes()
