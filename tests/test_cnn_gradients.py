"""Forward values against direct loop implementations, and finite-difference
gradient checks (float64) of every CNN layer and of the whole network, with
stride and padding other than 1 and odd feature-map sizes."""

import numpy as np
import pytest

from bioplaus.models import _cnn_layers as L
from bioplaus.models._cnn_network import BN_EPS, ConvNet

RTOL = 1e-6


def numerical_gradient(loss_of, array, n_entries=None, rng=None, step=1e-6):
    """Central differences of the scalar ``loss_of()`` w.r.t. ``array``
    (perturbed in place); all entries, or ``n_entries`` random ones.
    Returns ``(flat indices, gradient values)``."""
    flat = array.reshape(-1)
    idx = np.arange(flat.size)
    if n_entries is not None and n_entries < flat.size:
        idx = rng.choice(flat.size, n_entries, replace=False)
    grads = []
    for i in idx:
        old = flat[i]
        flat[i] = old + step
        up = loss_of()
        flat[i] = old - step
        down = loss_of()
        flat[i] = old
        grads.append((up - down) / (2 * step))
    return idx, np.array(grads)


def assert_gradient(analytic, loss_of, array, **kwargs):
    idx, numeric = numerical_gradient(loss_of, array, **kwargs)
    got = analytic.reshape(-1)[idx]
    scale = max(np.abs(numeric).max(), 1e-8)
    np.testing.assert_allclose(got, numeric, rtol=RTOL, atol=1e-7 * scale)


def direct_conv(x, w, stride, padding):
    """Reference convolution with explicit loops: x (n, h, w, c), w (k, k, c, f)."""
    n, h, wd, c = x.shape
    k, _, _, f = w.shape
    xp = np.zeros((n, h + 2 * padding, wd + 2 * padding, c))
    xp[:, padding:padding + h, padding:padding + wd] = x
    ho = (h + 2 * padding - k) // stride + 1
    wo = (wd + 2 * padding - k) // stride + 1
    out = np.zeros((n, ho, wo, f))
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                patch = xp[b, i * stride:i * stride + k, j * stride:j * stride + k, :]
                out[b, i, j] = np.tensordot(patch, w, axes=([0, 1, 2], [0, 1, 2]))
    return out


GEOMETRIES = [  # (h, w, c, f, k, stride, padding)
    (7, 6, 3, 4, 3, 2, 2),
    (9, 8, 2, 3, 4, 3, 1),
    (5, 5, 2, 2, 2, 1, 3),
    (6, 7, 1, 3, 5, 2, 0),
]


@pytest.mark.parametrize("h,w,c,f,k,stride,padding", GEOMETRIES)
def test_conv_forward_matches_direct_loops(h, w, c, f, k, stride, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, h, w, c))
    weight = rng.standard_normal((k, k, c, f))
    out, _ = L.conv_forward(x, weight, stride, padding)
    assert out.shape[1:3] == (L.conv_output_size(h, k, stride, padding),
                              L.conv_output_size(w, k, stride, padding))
    np.testing.assert_allclose(out, direct_conv(x, weight, stride, padding), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("h,w,c,f,k,stride,padding", GEOMETRIES)
def test_conv_gradients(h, w, c, f, k, stride, padding):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, h, w, c))
    weight = rng.standard_normal((k, k, c, f))
    out, cache = L.conv_forward(x, weight, stride, padding)
    probe = rng.standard_normal(out.shape)

    def loss():
        return float(np.sum(L.conv_forward(x, weight, stride, padding)[0] * probe))

    dx, dweight = L.conv_backward(probe, cache)
    assert dx.shape == x.shape and dweight.shape == weight.shape
    assert_gradient(dx, loss, x)
    assert_gradient(dweight, loss, weight)
    none, dweight_only = L.conv_backward(probe, cache, need_dx=False)
    assert none is None
    np.testing.assert_allclose(dweight_only, dweight)


def test_batchnorm_forward_and_gradients():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 3)) * 3 + 1
    gamma = rng.standard_normal(3)
    beta = rng.standard_normal(3)
    y, mean, var, cache = L.batchnorm_forward_train(x.copy(), gamma, beta, BN_EPS)
    expected = (x - x.mean(0)) / np.sqrt(x.var(0) + BN_EPS) * gamma + beta
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    np.testing.assert_allclose(mean, x.mean(0))
    np.testing.assert_allclose(var, x.var(0))
    probe = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(L.batchnorm_forward_train(x.copy(), gamma, beta, BN_EPS)[0] * probe))

    dx, dgamma, dbeta = L.batchnorm_backward(probe, cache)
    assert_gradient(dx, loss, x)
    assert_gradient(dgamma, loss, gamma)
    assert_gradient(dbeta, loss, beta)


def test_batchnorm_eval_uses_running_statistics():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 2))
    gamma, beta = np.array([2.0, -1.0]), np.array([0.5, 0.0])
    mean, var = np.array([1.0, -2.0]), np.array([4.0, 0.25])
    y = L.batchnorm_forward_eval(x, gamma, beta, mean, var, BN_EPS)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + BN_EPS) * gamma + beta)


@pytest.mark.parametrize("h,w", [(4, 6), (5, 7), (3, 2)])
def test_relu_pool_forward_and_gradients(h, w):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, h, w, 3))
    y, cache = L.relu_pool_forward(x)
    hp, wp = h // 2, w // 2  # floor
    assert y.shape == (2, hp, wp, 3)
    expected = np.maximum(x[:, :2 * hp, :2 * wp].reshape(2, hp, 2, wp, 2, 3).max(axis=(2, 4)), 0)
    np.testing.assert_array_equal(y, expected)
    probe = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(L.relu_pool_forward(x)[0] * probe))

    dx = L.relu_pool_backward(probe, cache)
    assert_gradient(dx, loss, x)
    if h % 2:
        assert not dx[:, -1].any()  # the dropped row gets no gradient
    if w % 2:
        assert not dx[:, :, -1].any()


def test_pool_routes_ties_to_exactly_one_element():
    x = np.ones((1, 4, 4, 2))  # every window is a four-way tie
    y, cache = L.relu_pool_forward(x)
    dx = L.relu_pool_backward(np.ones_like(y), cache)
    windows = dx.reshape(1, 2, 2, 2, 2, 2)
    np.testing.assert_array_equal(windows.sum(axis=(2, 4)), np.ones((1, 2, 2, 2)))
    assert np.count_nonzero(dx) == y.size


def test_linear_and_loss_gradients():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 5))
    weight = rng.standard_normal((5, 4))
    bias = rng.standard_normal(4)
    targets = np.array([0, 3, 1, 1, 2, 3])

    def loss():
        return L.softmax_cross_entropy(L.linear_forward(x, weight, bias), targets)[0]

    logits = L.linear_forward(x, weight, bias)
    value, dlogits = L.softmax_cross_entropy(logits, targets)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert value == pytest.approx(-log_p[np.arange(6), targets].mean(), rel=1e-12)
    dx, dweight, dbias = L.linear_backward(dlogits, x, weight)
    assert_gradient(dx, loss, x)
    assert_gradient(dweight, loss, weight)
    assert_gradient(dbias, loss, bias)
    logits_copy = logits.copy()
    assert_gradient(dlogits, lambda: L.softmax_cross_entropy(logits_copy, targets)[0], logits_copy)


def test_softmax_is_stable_for_large_logits():
    p = L.softmax(np.array([[1000.0, 0.0, -1000.0]]))
    np.testing.assert_allclose(p, [[1.0, 0.0, 0.0]], atol=1e-300)


@pytest.mark.parametrize("n_shards", [1, 3])
def test_network_gradients_with_stride_and_padding(n_shards):
    """Whole network (2 blocks, stride 2, padding 3, odd sizes), float64; batch
    norm statistics combined over shards must give the same gradients."""
    rng = np.random.default_rng(6)
    net = ConvNet((2, 11, 9), channels=(3, 4), kernel_sizes=(4, 3), stride=2, padding=3,
                  n_classes=3, rng=np.random.default_rng(7), dtype=np.float64)
    for g, b in zip(net.bn_gammas, net.bn_betas):  # non-trivial affine
        g[:] = rng.uniform(0.5, 1.5, g.shape)
        b[:] = rng.standard_normal(b.shape)
    x = rng.standard_normal((6, 11, 9, 2))
    targets = rng.integers(0, 3, 6)

    def shards():
        bounds = np.linspace(0, 6, n_shards + 1).astype(int)
        return [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def loss():
        logits, _ = net.forward_train(shards(), update_running=False)
        return L.softmax_cross_entropy(logits, targets)[0]

    logits, cache = net.forward_train(shards(), update_running=False)
    _, dlogits = L.softmax_cross_entropy(logits, targets)
    grads = net.backward(dlogits, cache)
    params = net.parameters()
    assert [g.shape for g in grads] == [p.shape for p in params]
    for p, g in zip(params, grads):
        assert_gradient(g, loss, p, n_entries=12, rng=rng)

    # sharding changes nothing but rounding
    one_logits, one_cache = net.forward_train([x], update_running=False)
    np.testing.assert_allclose(logits, one_logits, rtol=1e-10, atol=1e-12)
    for g, g1 in zip(grads, net.backward(dlogits, one_cache)):
        np.testing.assert_allclose(g, g1, rtol=1e-9, atol=1e-12)


def test_running_statistics_update():
    rng = np.random.default_rng(8)
    net = ConvNet((1, 6, 6), channels=(2,), kernel_sizes=(3,), stride=1, padding=1,
                  n_classes=2, rng=rng, dtype=np.float64, bn_momentum=0.25)
    x = rng.standard_normal((4, 6, 6, 1))
    z, _ = L.conv_forward(x, net.conv_weights[0], 1, 1)
    z = z.reshape(-1, 2)
    net.forward_train([x[:1], x[1:]])
    np.testing.assert_allclose(net.running_means[0], 0.25 * z.mean(0))
    np.testing.assert_allclose(net.running_vars[0], 0.75 + 0.25 * z.var(0, ddof=1))
