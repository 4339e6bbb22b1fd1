"""The rules' backprop control ``bp-sgd``: the same network, loss and SGD as fa/dfa/sign, true gradients."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.utils.estimator_checks import parametrize_with_checks

from float32_checks import FLOAT32_EXPECTED_FAILED

from bioplaus.models import BackpropSGDClassifier, FeedbackAlignmentClassifier, get_model
from bioplaus.models.registry import available_models
from bioplaus.study.alignment import supports_alignment


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_its_updates_are_the_gradient_of_the_batch_loss(activation, digits):
    X, y = digits
    est = BackpropSGDClassifier(hidden_layer_sizes=(7, 5), activation=activation, dtype="float64",
                                random_state=0).partial_fit(X[:20], y[:20], classes=np.arange(10))
    Xb = X[20:28].astype(np.float64)
    T = np.eye(10)[y[20:28]]
    loss, gW, gb, _ = est._batch_gradients(Xb, T, False)
    rng = np.random.default_rng(1)
    for layer in range(3):
        for _ in range(6):
            i, j = rng.integers(est._W[layer].shape[0]), rng.integers(est._W[layer].shape[1])
            w0, h = est._W[layer][i, j], 1e-6
            est._W[layer][i, j] = w0 + h
            up = est._batch_gradients(Xb, T, False)[0]
            est._W[layer][i, j] = w0 - h
            down = est._batch_gradients(Xb, T, False)[0]
            est._W[layer][i, j] = w0
            assert gW[layer][i, j] == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9)


def test_it_is_fa_with_the_transposed_forward_weights_as_feedback(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(20, 10), learning_rate=0.1, momentum=0.5, batch_size=10, dtype="float64",
              random_state=3)
    bp = BackpropSGDClassifier(**kw).partial_fit(X[:10], y[:10], classes=np.arange(10))
    fa = FeedbackAlignmentClassifier(**kw).partial_fit(X[:10], y[:10], classes=np.arange(10))
    fa._W, fa._b = [w.copy() for w in bp._W], [b.copy() for b in bp._b]
    fa._vW, fa._vb = [v.copy() for v in bp._vW], [v.copy() for v in bp._vb]
    Xb, T = X[10:30].astype(np.float64), np.eye(10)[y[10:30]]
    fa._B = [w.T.copy() for w in bp._W[1:]]
    _, g_fa, _, _ = fa._batch_gradients(Xb, T, False)
    _, g_bp, _, _ = bp._batch_gradients(Xb, T, False)
    for a, b in zip(g_fa, g_bp):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert all(np.array_equal(f, w.T) for f, w in zip(bp.feedback_, bp._W[1:]))


def test_it_learns_digits(digits):
    X, y = digits
    est = BackpropSGDClassifier(hidden_layer_sizes=(100,), learning_rate=0.1, momentum=0.9, batch_size=20,
                                epochs=10, random_state=0).fit(X[:1200], y[:1200])
    assert est.score(X[1200:], y[1200:]) > 0.9


def test_registry_entry_is_a_backprop_control_without_feedback_scale():
    spec = get_model("bp-sgd")
    assert "bp-sgd" in available_models() and spec.backprop
    space = spec.search_space()
    assert "feedback_scale" not in space and set(space["activation"].choices) == {"tanh", "sigmoid", "relu"}
    assert set(spec.default_params) == set(space)
    assert not supports_alignment("bp-sgd")  # its angle is 0 by construction
    est = spec.build(spec.default_params, input_shape=(8, 8), n_classes=10, epochs=1, random_state=0)
    assert isinstance(est, BackpropSGDClassifier) and est.hidden_layer_sizes == (500, 500)


@parametrize_with_checks([BackpropSGDClassifier(hidden_layer_sizes=(30,), learning_rate=0.1, momentum=0.9,
                                                epochs=30, batch_size=20, random_state=0)],
                         expected_failed_checks=lambda estimator: FLOAT32_EXPECTED_FAILED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
