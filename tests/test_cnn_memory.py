"""The CNN's memory: fused and in-place passes give the unfused passes' numbers (bit for bit forward,
to float32 rounding of the batch-norm sums backward), and a training step's peak is what :func:`training_step_nbytes` says (the study declares memory from it)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from bioplaus.models.cnn import _layers as L
from bioplaus.models.cnn._network import BN_EPS, ConvNet, feature_map_shapes, training_step_nbytes


def affine_params(rng, f, dtype):
    return rng.uniform(0.5, 1.5, f).astype(dtype), rng.standard_normal(f).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h, w", [(8, 6), (7, 9)])
def test_fused_batchnorm_pooling_equals_scale_then_pool(dtype, h, w):
    rng = np.random.default_rng(0)
    shape = (3, h, w, 5)
    x = rng.standard_normal((3 * h * w, 5)).astype(dtype)
    mean = L.column_sums(x) / x.shape[0]
    gamma, beta = affine_params(rng, 5, dtype)
    centred, squares = L.batchnorm_centre(x, mean)
    x2 = x.copy()
    same, _ = L.batchnorm_centre(x2, mean, out=x2)
    assert same is x2 and np.array_equal(same, centred)
    var = squares / x.shape[0]
    y, cache = L.batchnorm_scale(centred.copy(), var, gamma, beta, BN_EPS)
    ref_pooled, ref_cache = L.relu_pool_forward(y.reshape(shape))
    fused_cache = L.batchnorm_normalise(centred.copy(), var, gamma, BN_EPS)
    np.testing.assert_array_equal(fused_cache[0], cache[0])
    pooled, pool_cache = L.batchnorm_relu_pool_forward(fused_cache[0], gamma, beta, shape)
    np.testing.assert_array_equal(pooled, ref_pooled)
    assert pool_cache[0] == ref_cache[0]
    for a, b in zip(pool_cache[1:], ref_cache[1:]):
        np.testing.assert_array_equal(a, b)
    assert 0 < (ref_cache[1] >= 0).mean() < 1  # ReLU both passes and blocks: the codes are not trivial


def test_batchnorm_backward_in_place_equals_the_new_array():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    gamma, beta = affine_params(rng, 4, np.float32)
    _, _, _, cache = L.batchnorm_forward_train(x, gamma, beta, BN_EPS)
    dy = rng.standard_normal((50, 4)).astype(np.float32)
    dgamma, dbeta = L.batchnorm_backward_sums(dy, cache)
    expected = L.batchnorm_backward_dx(dy, cache, dgamma, dbeta, 50)
    out = L.batchnorm_backward_dx_inplace(dy, cache, dgamma, dbeta, 50)
    assert out is dy
    np.testing.assert_array_equal(out, expected)


def reference_relu_pool_backward(dy, cache):
    """The pooling gradient from the window codes by NumPy: each quarter of dx is dy where the
    code names it, zero elsewhere."""
    x_shape, code = cache
    hp, wp = dy.shape[1], dy.shape[2]
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for q, (i, j) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        dx[:, i:2 * hp:2, j:2 * wp:2] = np.where(code == q, dy, 0)
    return dx


def reference_step(net, x, targets):
    """Logits and gradients of one batch (one shard) from the unfused layer functions: every
    intermediate array of its own, as the network formed them before its passes were fused."""
    caches, h = [], x
    for weight, gamma, beta in zip(net.conv_weights, net.bn_gammas, net.bn_betas):
        z, conv_cache = L.conv_forward(h, weight, net.stride, net.padding, net.max_patch_bytes)
        z2 = z.reshape(-1, z.shape[-1])
        count = z2.shape[0]
        centred, squares = L.batchnorm_centre(z2, L.column_sums(z2) / count)
        y, bn_cache = L.batchnorm_scale(centred, squares / count, gamma, beta, BN_EPS)
        h, pool_cache = L.relu_pool_forward(y.reshape(z.shape))
        caches.append((conv_cache, bn_cache, pool_cache, count))
    flat = h.reshape(h.shape[0], -1)
    logits = L.linear_forward(flat, net.linear_weight, net.linear_bias)
    _, dlogits = L.softmax_cross_entropy(logits, targets)
    dflat, dw, db = L.linear_backward(dlogits, flat, net.linear_weight)
    grads, dx = [dw, db], dflat.reshape(h.shape)
    for i in range(len(caches) - 1, -1, -1):
        conv_cache, bn_cache, pool_cache, count = caches[i]
        dz = reference_relu_pool_backward(dx, pool_cache)
        dz2 = dz.reshape(-1, dz.shape[-1])
        dgamma, dbeta = L.batchnorm_backward_sums(dz2, bn_cache)
        dzn = L.batchnorm_backward_dx(dz2, bn_cache, dgamma, dbeta, count)
        dx, dweight = L.conv_backward(dzn.reshape(dz.shape), conv_cache, need_dx=i > 0)
        grads = [dweight, dgamma, dbeta] + grads
    return logits, dlogits, grads


@pytest.mark.parametrize("geometry", [
    dict(input_shape=(2, 11, 9), channels=(3, 4), kernel_sizes=(4, 3), stride=2, padding=3),
    dict(input_shape=(1, 16, 16), channels=(6, 8, 5), kernel_sizes=(2, 2, 2), stride=1, padding=3),
])
@pytest.mark.parametrize("budget", [None, 3000])
def test_training_step_equals_the_unfused_passes(geometry, budget):
    """Logits bit for bit; gradients up to float32 rounding: the fused pooling and batch-norm
    backward pass sums its parameter gradients over the windows in float64, the unfused one over
    the whole map by NumPy."""
    rng = np.random.default_rng(2)
    net = ConvNet(**geometry, n_classes=3, rng=np.random.default_rng(3), dtype=np.float32,
                  max_patch_bytes=budget)
    for g, b in zip(net.bn_gammas, net.bn_betas):  # non-trivial affine
        g[:], b[:] = affine_params(rng, g.shape, np.float32)
    c, h, w = geometry["input_shape"]
    x = rng.standard_normal((9, h, w, c)).astype(np.float32)
    targets = rng.integers(0, 3, 9)
    ref_logits, dlogits, ref_grads = reference_step(net, x, targets)
    logits, cache = net.forward_train([x], update_running=False)
    if budget is not None:  # the patch budget chunks the first convolution
        assert cache[0][0][0][0][-1] < 9
    np.testing.assert_array_equal(logits, ref_logits)
    grads = net.backward(dlogits, cache)
    assert len(grads) == len(ref_grads)
    for g, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    assert all(entry is None for entry in cache[0])  # backward released every block's buffers


def traced_step_peak(net, x, targets):
    """Peak bytes allocated by one forward and backward pass, above what was allocated before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        logits, cache = net.forward_train([x])
        _, dlogits = L.softmax_cross_entropy(logits, targets)
        net.backward(dlogits, cache)
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("geometry, n, budget", [
    (dict(input_shape=(1, 28, 28), channels=(32, 32, 32), kernel_sizes=(2, 2, 2), stride=1, padding=3), 128, None),
    (dict(input_shape=(1, 28, 28), channels=(16, 64), kernel_sizes=(10, 10), stride=1, padding=3), 64, 2**20),
    (dict(input_shape=(3, 20, 20), channels=(24, 24), kernel_sizes=(3, 5), stride=1, padding=2), 96, 2**19),
])
def test_training_step_peak_is_the_declared_one(geometry, n, budget):
    """The peak of a step is training_step_nbytes (within 5%; the study declares memory from it), and
    besides the patches kept for the backward pass below 2.75 times the convolution outputs (the
    passes before fusion held more: output, centred copy, batch-norm output, separate gradients)."""
    rng = np.random.default_rng(4)
    net = ConvNet(**geometry, n_classes=10, rng=np.random.default_rng(5), max_patch_bytes=budget)
    c, h, w = geometry["input_shape"]
    x = rng.random((n, h, w, c), dtype=np.float32)
    targets = rng.integers(0, 10, n)
    with threadpool_limits(1):
        measured = traced_step_peak(net, x, targets)
    # the formula counts the batch's image copy and the optimiser state, allocated outside this step
    n_params = sum(p.size for p in net.parameters())
    declared = training_step_nbytes(geometry["input_shape"], geometry["channels"], geometry["kernel_sizes"],
                                    geometry["stride"], geometry["padding"], n, 10, budget) - x.nbytes
    declared -= 4 * n_params * 4
    assert 0.95 * declared < measured < 1.05 * declared, (measured, declared)
    conv_outputs, kept_patches, shape = 0, 0, geometry["input_shape"]
    for (ch, cw, ph, pw, f), k in zip(feature_map_shapes(shape, geometry["channels"], geometry["kernel_sizes"],
                                                         geometry["stride"], geometry["padding"]),
                                      geometry["kernel_sizes"]):
        conv_outputs += n * ch * cw * f * 4
        c_in, h_in, w_in = shape
        if L.conv_chunk_size(n, h_in, w_in, c_in, k, geometry["stride"], geometry["padding"], 4, budget) >= n:
            kept_patches += n * ch * cw * k * k * c_in * 4
        shape = (f, ph, pw)
    # measured here: 1.7-2.6 convolution outputs besides the kept patches; 2.8-3.7 before fusion
    assert measured - kept_patches < 2.75 * conv_outputs


def test_prediction_chunk_bounds_the_outputs_too():
    """One block of 64 channels with kernel 2 on one input channel: 4 patch entries per position
    against 64 outputs. A prediction chunk sized by the patches alone held 16 times the budget in
    convolution outputs; sized by both, a predict call stays within twice the budget."""
    from bioplaus.models.cnn.estimator import CNNClassifier

    rng = np.random.default_rng(6)
    X = rng.random((600, 28 * 28), dtype=np.float32)
    y = rng.integers(0, 10, 600)
    budget_mb = 4
    est = CNNClassifier(n_blocks=1, channels=64, kernel_sizes=2, padding=3, batch_size=50, epochs=1,
                        input_shape=(1, 28, 28), max_patch_mb=budget_mb, random_state=0).fit(X[:100], y[:100])
    assert est._predict_chunk() * 2 * 33 * 33 * 64 * 4 <= budget_mb * 2**20
    whole = clone_with(est, predict_batch_size=600).predict_proba(X)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        proba = est.predict_proba(X)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 2 * budget_mb * 2**20, peak
    # other chunks change only the float32 rounding of the convolution products (a last chunk of
    # few rows goes through OpenBLAS's small-matrix kernels: 2e-5 relative on AVX-512 machines)
    np.testing.assert_allclose(proba, whole, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(proba.argmax(axis=1), whole.argmax(axis=1))


def clone_with(est, **params):
    """A fitted estimator's copy with other (prediction) parameters."""
    import copy

    return copy.deepcopy(est).set_params(**params)
