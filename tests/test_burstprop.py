"""Burstprop (rate form): what the rule is, and the estimator API."""

from __future__ import annotations

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution
from sklearn.datasets import load_digits
from sklearn.utils.estimator_checks import parametrize_with_checks

from bioplaus.errors import InvalidConfigurationError
from bioplaus.study.evaluation import _is_diverged
from bioplaus.models import BurstpropClassifier, get_model


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def _sig(a):
    return 1 / (1 + np.exp(-a))


# No check is skipped. (check_classifiers_train wants > 83 % on standardised blobs: a sigmoid network on
# squared error needs unit-gain initial weights and many passes for that.)
@parametrize_with_checks([BurstpropClassifier(hidden_layer_sizes=(30,), hidden_lr=1.0, output_lr=1.0, weight_scale=1.0,
                                              epochs=100, batch_size=10, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _fresh(X, y, **kw):
    kw = {"hidden_layer_sizes": (20, 15), "dtype": "float64", "random_state": 0, **kw}
    return BurstpropClassifier(**kw).partial_fit(X[:4], y[:4], classes=np.arange(10))


@pytest.mark.parametrize("recurrent", [False, True])
def test_no_update_when_teaching_equals_free_output(digits, recurrent):
    X, y = digits
    X = X.astype(np.float64)
    est = _fresh(X, y, recurrent_input=recurrent, momentum=0.0, weight_decay=0.0)
    xb = X[4:20]
    e_out = est._event_rates(xb)[-1]
    _, gW, gb, _ = est._batch_gradients(xb, e_out.copy(), False)
    for g in gW + gb:
        assert np.all(g == 0)
    W0, b0 = est.W_, est.b_
    est._apply(gW, gb)
    for a, b in zip(W0 + b0, est.W_ + est.b_):
        np.testing.assert_array_equal(a, b)
    # and a real target does change every layer
    _, gW, _, _ = est._batch_gradients(xb, np.eye(10)[y[4:20]], False)
    assert all(np.abs(g).max() > 0 for g in gW)


def test_burst_rates_follow_the_equations(digits):
    X, y = digits
    X = X.astype(np.float64)
    est = _fresh(X, y, hidden_layer_sizes=(12,), recurrent_input=True, p_baseline=0.3)
    est._Z[0] = np.random.default_rng(0).normal(0, 0.1, (12, 12))
    x, T = X[4:9], np.eye(10)[y[4:9]]
    W, b, Y, Z = est.W_, est.b_, est.Y_[0], est.Z_[0]
    e1 = _sig(x @ W[0] + b[0])
    e2 = _sig(e1 @ W[1] + b[1])
    free_out = 0.3 * e2
    teach_out = 0.3 * (1 + (1 - e2) * (T - e2)) * e2
    v, vt = free_out @ Y, teach_out @ Y
    b_hat = _sig(v) * e1
    P, Pt = _sig((1 - e1) * v - b_hat @ Z), _sig((1 - e1) * vt - b_hat @ Z)
    diffs, recurrent = est._burst_differences([x, e1, e2], T)
    np.testing.assert_allclose(diffs[1], teach_out - free_out, rtol=1e-12)
    np.testing.assert_allclose(diffs[0], (Pt - P) * e1, rtol=1e-10, atol=1e-15)
    (l, u, bh), = recurrent
    np.testing.assert_allclose(u, (1 - e1) * v - b_hat @ Z, rtol=1e-12)
    # the output rule is p_bar times the gradient step on J = 1/2 ||t - e_out||^2
    loss, gW, gb, _ = est._batch_gradients(x, T, False)
    grad_out = e1.T @ (-(T - e2) * e2 * (1 - e2)) / 5
    np.testing.assert_allclose(gW[1], 0.3 * grad_out, rtol=1e-12)
    assert loss == pytest.approx(0.5 * np.sum((T - e2) ** 2) / 5, rel=1e-12)


def test_symmetric_feedback_carries_the_backprop_signal(digits):
    X, y = digits
    X = X.astype(np.float64)
    est = _fresh(X, y, hidden_layer_sizes=(40, 30), recurrent_input=False, record_alignment=True)
    est._Y = [est._W[l + 1].T.copy() for l in range(2)]
    est.set_params(hidden_lr=0.0, output_lr=0.0).partial_fit(X[4:68], y[4:68])
    assert np.all(np.array(est.alignment_[-1]) < 15)  # random feedback: about 90 degrees at first
    rand = _fresh(X, y, hidden_layer_sizes=(40, 30), recurrent_input=False, record_alignment=True)
    rand.set_params(hidden_lr=0.0, output_lr=0.0).partial_fit(X[4:68], y[4:68])
    assert np.all(np.array(rand.alignment_[-1]) > 60)


@pytest.mark.parametrize("recurrent", [False, True])
def test_each_update_lowers_its_local_losses(digits, recurrent):
    X, y = digits
    X = X.astype(np.float64)
    est = _fresh(X, y, batch_size=1, hidden_lr=1e-2, output_lr=1e-2, momentum=0.0, weight_decay=0.0,
                 recurrent_input=recurrent, recurrent_lr=1e-3)
    for i in range(4, 30):
        x, T = X[i:i + 1], np.eye(10)[y[i:i + 1]]
        e = est._event_rates(x)
        diffs, recurrent_terms = est._burst_differences(e, T)
        pre = [e[l] @ est._W[l] + est._b[l] for l in range(3)]
        # hidden layers: the pre-activation moves toward its burst-difference target a + (Bu^t - Bu)
        targets = [pre[l] + diffs[l] for l in range(2)]

        def losses():
            hidden = [0.5 * np.sum((e[l] @ est._W[l] + est._b[l] - targets[l]) ** 2) for l in range(2)]
            out = 0.5 * np.sum((T - _sig(e[2] @ est._W[2] + est._b[2])) ** 2)  # output loss, old input
            return hidden + [out]

        before = losses()
        Z0 = [z.copy() for z in est._Z]
        est.partial_fit(x, y[i:i + 1])
        after = losses()
        for name, b0, b1 in zip(("hidden 0", "hidden 1", "output"), before, after):
            if b0 > 1e-14:
                assert b1 < b0, f"{name} local loss rose on example {i}: {b0} -> {b1}"
        if recurrent:  # Z moves to cancel the apical potential: |u| of this example falls
            for l, u, b_hat in recurrent_terms:
                u_new = u + b_hat @ Z0[l] - b_hat @ est._Z[l]
                assert np.sum(u_new ** 2) < np.sum(u ** 2)
        else:
            for z0, z in zip(Z0, est._Z):
                np.testing.assert_array_equal(z0, z)


def test_divergence_detected_with_a_huge_learning_rate(digits):
    X, y = digits
    est = BurstpropClassifier(hidden_layer_sizes=(50,), hidden_lr=1e6, output_lr=1e6, recurrent_lr=1e6,
                              batch_size=20, random_state=0)
    est.partial_fit(X[:1000], y[:1000], classes=np.arange(10))
    assert est.diverged_ and _is_diverged(est) and est.n_examples_seen_ < 1000
    pred = est.predict(X[:1000])
    assert 0.03 < np.mean(pred == y[:1000]) < 0.2
    np.testing.assert_allclose(est.predict_proba(X[:5]), 0.1)


def test_learns_digits_reproducibly(digits):
    X, y = digits
    # a sigmoid network on squared error learns slowly: above chance (0.1) by far within 10 epochs
    kw = dict(hidden_layer_sizes=(100,), hidden_lr=1.0, output_lr=0.5, batch_size=20, epochs=10)
    a = BurstpropClassifier(random_state=3, **kw).fit(X[:1200], y[:1200])
    b = BurstpropClassifier(random_state=3, **kw).fit(X[:1200], y[:1200])
    c = BurstpropClassifier(random_state=4, **kw).fit(X[:1200], y[:1200])
    assert a.score(X[1200:], y[1200:]) > 0.5 and not a.diverged_
    for wa, wb in zip(a.W_ + a.Y_ + a.Z_, b.W_ + b.Y_ + b.Z_):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.W_[0], c.W_[0])
    assert a.W_[0].dtype == np.float32 and a.Y_[0].shape == (10, 100) and a.Z_[0].shape == (100, 100)
    proba = a.predict_proba(X[1200:1210])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_array_equal(a.classes_[proba.argmax(axis=1)], a.predict(X[1200:1210]))


def test_partial_fit_chunking_invariance(digits):
    X, y = digits
    X, y = X[:256], y[:256]
    kw = dict(hidden_layer_sizes=(30, 20), batch_size=32, random_state=0, record_alignment=True)
    one = BurstpropClassifier(**kw).partial_fit(X, y, classes=np.arange(10))
    parts = BurstpropClassifier(**kw)
    parts.partial_fit(X[:128], y[:128], classes=np.arange(10))
    parts.partial_fit(X[128:], y[128:])
    for a, b in zip(one.W_ + one.b_ + one.Z_, parts.W_ + parts.b_ + parts.Z_):
        np.testing.assert_array_equal(a, b)
    assert parts.alignment_batches_ == [4, 4] and len(one.alignment_) == 1
    np.testing.assert_allclose(one.alignment_[0], np.mean(parts.alignment_, axis=0), rtol=1e-5)


#: the authors' MNIST training, jordan-g/Burstprop@e231c88 train_mnist.py defaults and networks.py MNISTNet
#: (commit 97954ef "Fixes to match original training"); rates are per *summed* batch (layers.py: grad = delta^T input)
AUTHORS_MNIST = {"batch_size": 32, "hidden_lr": 0.1, "output_lr": 0.01, "recurrent_lr": 1e-4, "momentum": 0.8,
                 "weight_decay": 1e-6, "p_baseline": 0.2, "weight_fa_std": 1.0, "xavier_gain": 1.0,
                 "weight_r_range": 0.01, "hidden": (500, 500, 500)}


def test_default_update_is_the_authors_summed_batch_step(digits):
    """One batch at the defaults moves W, b and Z by the authors' summed-batch step (would catch a 1/B slip)."""
    X, y = digits
    X = X.astype(np.float64)
    A = AUTHORS_MNIST
    spec = get_model("burstprop")
    est = BurstpropClassifier(dtype="float64", random_state=0)
    defaults = est.get_params()
    for key in ("hidden_lr", "output_lr", "recurrent_lr"):
        assert defaults[key] == pytest.approx(A[key] * A["batch_size"]) == spec.default_params[key]
    for key in ("momentum", "p_baseline", "batch_size"):
        assert defaults[key] == A[key] == spec.default_params[key]
    assert defaults["weight_decay"] == A["weight_decay"] == spec.options["weight_decay"]["default"]
    assert defaults["feedback_std"] == A["weight_fa_std"] == spec.default_params["feedback_std"]
    assert defaults["weight_scale"] == A["xavier_gain"] == spec.default_params["weight_scale"]
    assert defaults["hidden_layer_sizes"] == A["hidden"] and defaults["recurrent_input"] is True
    # state after a zero-rate call, then one real batch of 32 rows
    est.set_params(hidden_lr=0.0, output_lr=0.0, recurrent_lr=0.0, weight_decay=0.0)
    est.partial_fit(X[:32], y[:32], classes=np.arange(10))
    est.set_params(**{k: defaults[k] for k in ("hidden_lr", "output_lr", "recurrent_lr", "weight_decay")})
    W0, b0, Z0 = est.W_, est.b_, est.Z_
    xb, T = X[32:64], np.eye(10)[y[32:64]]
    e = est._event_rates(xb)
    diffs, rec = est._burst_differences(e, T)
    est.partial_fit(xb, y[32:64])  # velocities are zero: the first step is -rate * g
    rates = [A["hidden_lr"]] * 3 + [A["output_lr"]]
    for l in range(4):
        expected_W = W0[l] + rates[l] * (e[l].T @ diffs[l]) - A["weight_decay"] * W0[l]
        np.testing.assert_allclose(est.W_[l], expected_W, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(est.b_[l], b0[l] + rates[l] * diffs[l].sum(axis=0), rtol=1e-10, atol=1e-13)
        assert np.abs(est.W_[l] - W0[l]).max() > 1e-6
    for l, u, b_hat in rec:
        np.testing.assert_allclose(est.Z_[l], Z0[l] + A["recurrent_lr"] * (b_hat.T @ u), rtol=1e-10, atol=1e-15)


def test_initial_weights_follow_the_authors_distributions(digits):
    X, y = digits
    est = BurstpropClassifier(hidden_layer_sizes=(400, 300), dtype="float64", feedback_std=0.7, weight_scale=1.5,
                              hidden_lr=0.0, output_lr=0.0, recurrent_lr=0.0, weight_decay=0.0,
                              random_state=1).partial_fit(X[:2], y[:2], classes=np.arange(10))
    W, Y, Z = est.W_, est.Y_, est.Z_
    for w, (n_in, n_out) in zip(W, ((64, 400), (400, 300), (300, 10))):
        assert np.std(w) == pytest.approx(1.5 * np.sqrt(2 / (n_in + n_out)), rel=0.05)
    y_all = np.concatenate([v.ravel() for v in Y])
    assert np.std(y_all) == pytest.approx(0.7, rel=0.02)
    kurtosis = np.mean((y_all - y_all.mean()) ** 4) / np.var(y_all) ** 2
    assert kurtosis == pytest.approx(3.0, abs=0.15)  # normal (a uniform draw has 1.8)
    assert all(np.abs(z).max() <= AUTHORS_MNIST["weight_r_range"] for z in Z)
    assert all(np.std(z) == pytest.approx(0.01 / np.sqrt(3), rel=0.05) for z in Z)


def test_invalid_settings_rejected_at_fit_with_names(digits):
    X, y = digits
    for kw, match in ((dict(p_baseline=1.0), "p_baseline"), (dict(p_baseline=0.0), "p_baseline"),
                      (dict(feedback_std=-1.0), "feedback_std"), (dict(recurrent_input="no"), "recurrent_input"),
                      (dict(hidden_lr=float("nan")), "hidden_lr"), (dict(weight_decay=2.0), "weight_decay")):
        with pytest.raises(InvalidConfigurationError, match=match):
            BurstpropClassifier(hidden_layer_sizes=(10,), **kw).fit(X[:20], y[:20])


def test_spec_space_contains_defaults_and_builds(digits):
    spec = get_model("burstprop")
    space = spec.search_space({})
    assert set(spec.default_params) == set(space)
    for key, dist in space.items():
        assert dist._contains(dist.to_internal_repr(spec.default_params[key])), key
    est = spec.build(dict(spec.default_params), input_shape=(1, 8, 8), n_classes=10, epochs=1, random_state=0,
                     options={})
    assert est.hidden_layer_sizes == (500, 500, 500) and est.batch_size == 32 and est.weight_decay == 1e-6
    X, y = digits
    rng = np.random.default_rng(0)
    for _ in range(3):
        params = {}
        for key, dist in space.items():
            if isinstance(dist, CategoricalDistribution):
                params[key] = dist.choices[rng.integers(len(dist.choices))]
            elif dist.log:
                params[key] = type(dist.low)(np.exp(rng.uniform(np.log(dist.low), np.log(dist.high))))
            else:
                params[key] = type(dist.low)(rng.uniform(dist.low, dist.high))
        params.update(num_layers=2, h_l_1=20, h_l_2=15)
        est = spec.build(params, input_shape=(1, 8, 8), n_classes=10, epochs=1, random_state=0, options={})
        est.partial_fit(X[:100], y[:100], classes=np.arange(10))
        assert est.predict(X[:3]).shape == (3,)
