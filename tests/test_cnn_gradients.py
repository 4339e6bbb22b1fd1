"""Forward values against direct loop implementations, and finite-difference
gradient checks (float64) of every CNN layer and of the whole network, with
stride and padding other than 1 and odd feature-map sizes; chunked (bounded
im2col buffer) convolutions against unchunked ones, and the memory bound."""

import tracemalloc

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from bioplaus.models.cnn import _layers as L
from bioplaus.models.cnn._network import BN_EPS, ConvNet, feature_map_shapes

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


# ---------------------------------------------------------------------------
# bounded im2col buffer: chunked convolutions
# ---------------------------------------------------------------------------


def patch_bytes_per_image(h, w, c, k, stride, padding, itemsize):
    return (L.conv_output_size(h, k, stride, padding) * L.conv_output_size(w, k, stride, padding)
            * k * k * c * itemsize)


@pytest.mark.parametrize("h,w,c,f,k,stride,padding", GEOMETRIES)
@pytest.mark.parametrize("images_per_chunk", [1, 2])
def test_chunked_conv_equals_unchunked(h, w, c, f, k, stride, padding, images_per_chunk):
    """A patch budget of one or two images (5 images: chunks 1+1+1+1+1 or
    2+2+1) gives the unchunked output and gradients, which are checked by
    finite differences too."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, h, w, c))
    weight = rng.standard_normal((k, k, c, f))
    budget = images_per_chunk * patch_bytes_per_image(h, w, c, k, stride, padding, 8)
    whole, whole_cache = L.conv_forward(x, weight, stride, padding)
    out, cache = L.conv_forward(x, weight, stride, padding, max_patch_bytes=budget)
    assert whole_cache[0] is not None and whole_cache[-1] == 5  # one chunk, patches kept
    assert cache[0] is None and cache[-1] == images_per_chunk  # chunked, only x kept
    np.testing.assert_allclose(out, whole, rtol=1e-10, atol=1e-12)
    probe = rng.standard_normal(out.shape)
    dx_whole, dweight_whole = L.conv_backward(probe, whole_cache)
    dx, dweight = L.conv_backward(probe, cache)
    np.testing.assert_allclose(dx, dx_whole, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dweight, dweight_whole, rtol=1e-10, atol=1e-12)

    def loss():
        return float(np.sum(L.conv_forward(x, weight, stride, padding, budget)[0] * probe))

    assert_gradient(dweight, loss, weight)
    assert_gradient(dx, loss, x, n_entries=20, rng=rng)


def test_chunk_size_follows_the_budget():
    # 28x28, kernel 5, padding 2: 784 positions x 25 entries x 4 bytes per image
    per_image = 784 * 25 * 4
    assert L.conv_chunk_size(100, 28, 28, 1, 5, 1, 2, 4, 10 * per_image) == 10
    assert L.conv_chunk_size(100, 28, 28, 1, 5, 1, 2, 4, 10 * per_image - 1) == 9
    assert L.conv_chunk_size(100, 28, 28, 1, 5, 1, 2, 4, 1) == 1  # at least one image
    assert L.conv_chunk_size(100, 28, 28, 1, 5, 1, 2, 4, 10**9) == 100  # at most n
    # the default budget holds the default architecture's batch of 100 (one
    # chunk, as before chunking): block 2 is 14x14 positions x 5*5*16 entries
    assert L.conv_chunk_size(100, 14, 14, 16, 5, 1, 2, 4) == 100
    assert 100 * 14 * 14 * 400 * 4 <= L.PATCH_BUDGET_BYTES


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_chunked_network_equals_unchunked(dtype, rtol):
    """Whole network with a patch budget of a few images per chunk vs one
    chunk: same logits, loss gradients and running statistics up to rounding."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((9, 11, 9, 2)).astype(dtype)
    targets = rng.integers(0, 3, 9)
    results = []
    for budget in (None, 3 * patch_bytes_per_image(11, 9, 2, 4, 2, 3, x.itemsize)):
        net = ConvNet((2, 11, 9), channels=(3, 4), kernel_sizes=(4, 3), stride=2, padding=3,
                      n_classes=3, rng=np.random.default_rng(7), dtype=dtype,
                      max_patch_bytes=budget)
        logits, cache = net.forward_train([x[:4], x[4:]])
        chunks = [shard[-1] for shard in cache[0][0][0]]  # block 1's chunk sizes
        _, dlogits = L.softmax_cross_entropy(logits, targets)
        grads = net.backward(dlogits, cache)
        results.append((logits, grads, net.running_means + net.running_vars, chunks,
                        net.forward_eval([x])))
    (logits, grads, stats, chunks, eval_logits), (c_logits, c_grads, c_stats, c_chunks,
                                                  c_eval) = results
    assert chunks == [4, 5] and c_chunks == [3, 3]
    np.testing.assert_allclose(c_logits, logits, rtol=rtol, atol=rtol * np.abs(logits).max())
    np.testing.assert_allclose(c_eval, eval_logits, rtol=rtol,
                               atol=rtol * np.abs(eval_logits).max())
    for g, cg in zip(grads, c_grads):
        np.testing.assert_allclose(cg, g, rtol=rtol, atol=rtol * np.abs(g).max())
    for s, cs in zip(stats, c_stats):
        np.testing.assert_allclose(cs, s, rtol=rtol)


def traced_peak_bytes(fn):
    """Peak bytes allocated (numpy included) by fn() above what was allocated
    before it, measured with tracemalloc."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        if not was_tracing:
            tracemalloc.stop()


def test_training_step_memory_is_bounded_by_the_patch_budget(monkeypatch):
    """One training step (forward and backward) of 64 images, 28x28, blocks of
    16 and 64 channels with kernel 10 and padding 3. Unchunked, the patch
    matrices are 16 MB (block 1) and 33 MB (block 2); with a 1 MiB budget the
    peak must stay within one buffer per block (kept for backward when it fits)
    plus one being built, plus five copies of the conv outputs (the output,
    its normalised copy, the batch-norm output and two backward temporaries)."""
    n, budget = 64, 2**20
    shape, channels, kernels, padding = (1, 28, 28), (16, 64), (10, 10), 3
    rng = np.random.default_rng(11)
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    targets = rng.integers(0, 10, n)
    conv_outputs = 0
    for ch, cw, _, _, f in feature_map_shapes(shape, channels, kernels, 1, padding):
        conv_outputs += n * ch * cw * f * 4
    bound = (len(channels) + 1) * budget + 5 * conv_outputs + x.nbytes

    def step(max_patch_bytes):
        net = ConvNet(shape, channels, kernels, 1, padding, n_classes=10,
                      rng=np.random.default_rng(0), max_patch_bytes=max_patch_bytes)
        logits, cache = net.forward_train([x])
        _, dlogits = L.softmax_cross_entropy(logits, targets)
        grads = net.backward(dlogits, cache)
        assert all(np.isfinite(g).all() for g in grads)

    with threadpool_limits(1):  # BLAS threads only slow these tall, narrow products
        bounded = traced_peak_bytes(lambda: step(budget))
        # one chunk per layer, as before long patch rows were chunked to stay in cache
        monkeypatch.setattr(L, "CACHE_ROW_BYTES", 2**40)
        unbounded = traced_peak_bytes(lambda: step(2**40))
    assert bounded < bound, (bounded, bound)
    assert unbounded > bound  # the bound is tight enough to catch whole patch matrices
