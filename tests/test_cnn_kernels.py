"""The compiled loops of the CNN (bioplaus.models.cnn._kernels) against the NumPy code they replaced
(strided im2col copy, whole-array pooling masks, batch-norm gradient: the same values to the last
bit; one product per kernel offset for the input gradient: the same up to BLAS's rounding, which
depends on the product's shape), in float32 and float64, on odd map sizes, strides 1-3 and padding
up to and beyond the kernel size."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from bioplaus.models.cnn import _layers as L

GEOMETRIES = [  # (n, h, w, c, f, k, stride, padding)
    (3, 7, 9, 2, 5, 3, 1, 1),
    (2, 8, 8, 3, 4, 2, 1, 3),   # padding beyond the kernel: whole patch rows in the padding
    (4, 11, 6, 1, 3, 4, 2, 3),
    (2, 9, 10, 5, 6, 5, 3, 2),
    (3, 14, 14, 16, 8, 5, 1, 2),
]


def numpy_im2col(x, k, stride, padding, ho, wo):
    n, h, w, c = x.shape
    xp = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=x.dtype)
    xp[:, padding:padding + h, padding:padding + w] = x
    windows = sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride][:, :ho, :wo]
    return np.ascontiguousarray(windows.transpose(0, 1, 2, 4, 5, 3)).reshape(n * ho * wo, k * k * c)


def numpy_input_gradient(dout, weight, x_shape, stride, padding):
    """The former input gradient: one (n*ho*wo, f) @ (f, c) product per kernel offset, each added
    to the strided window of a zero-padded input in offset order."""
    n, h, w, c = x_shape
    k, f = weight.shape[0], weight.shape[3]
    _, ho, wo, _ = dout.shape
    dxp = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=dout.dtype)
    weight_t = np.ascontiguousarray(weight.transpose(0, 1, 3, 2))
    part = np.empty((n, ho, wo, c), dtype=dout.dtype)
    for i in range(k):
        for j in range(k):
            np.matmul(dout.reshape(-1, f), weight_t[i, j], out=part.reshape(-1, c))
            dxp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride] += part
    return dxp[:, padding:padding + h, padding:padding + w]


def numpy_relu_pool(y):
    """The former pooling: four window quarters compared as whole arrays; the gradient's element
    is the first maximum (top-left, top-right, bottom-left, bottom-right), none when y <= 0."""
    n, h, w, f = y.shape
    hp, wp = h // 2, w // 2
    a, b, c, d = (y[:, i:2 * hp:2, j:2 * wp:2] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
    right_top, right_bottom = b > a, d > c
    top, bottom = np.maximum(a, b), np.maximum(c, d)
    use_bottom = bottom > top
    pooled = np.maximum(np.maximum(top, bottom), 0)
    code = np.where(use_bottom, 2 + right_bottom, right_top.astype(int))
    return pooled, np.where(pooled > 0, code, -1).astype(np.int8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_im2col_and_input_gradient_equal_the_numpy_ones(geometry, dtype):
    n, h, w, c, f, k, stride, padding = geometry
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    weight = rng.standard_normal((k, k, c, f)).astype(dtype)
    ho, wo = L.conv_output_size(h, k, stride, padding), L.conv_output_size(w, k, stride, padding)
    expected = numpy_im2col(x, k, stride, padding, ho, wo)
    np.testing.assert_array_equal(L._im2col(x, k, stride, padding, ho, wo), expected)
    rows = max(1, expected.shape[0] // 3)  # a chunk of rows that starts and ends inside images
    part = L._im2col(x, k, stride, padding, ho, wo, first=rows, rows=rows)
    np.testing.assert_array_equal(part, expected[rows:2 * rows])
    dout = rng.standard_normal((n, ho, wo, f)).astype(dtype)
    _, cache = L.conv_forward(x, weight, stride, padding)
    dx, _ = L.conv_backward(dout, cache)
    np.testing.assert_allclose(dx, numpy_input_gradient(dout, weight, x.shape, stride, padding),  # BLAS's rounding
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)  # differs by shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h, w", [(8, 6), (7, 9), (2, 3)])
def test_pooling_equals_the_numpy_one(h, w, dtype):
    rng = np.random.default_rng(1)
    f = 5
    centred = rng.standard_normal((3 * h * w, f)).astype(dtype)
    centred[::7] = 0.0  # ties
    var = rng.uniform(0.5, 2.0, f).astype(dtype)
    gamma, beta = rng.uniform(0.5, 1.5, f).astype(dtype), rng.standard_normal(f).astype(dtype)
    inv_std = (1.0 / np.sqrt(var + 1e-5)).astype(dtype)
    xhat = centred * inv_std
    y = xhat * gamma
    y += beta
    expected, expected_code = numpy_relu_pool(y.reshape(3, h, w, f))
    z = centred.copy()
    pooled, bn_cache, (shape, code) = L.batchnorm_normalise_relu_pool(z, var, gamma, beta, 1e-5, (3, h, w, f))
    np.testing.assert_array_equal(z, xhat)  # normalised in place, the dropped rows and columns too
    np.testing.assert_array_equal(pooled, expected)
    np.testing.assert_array_equal(code, expected_code)
    assert 0 < (code >= 0).mean() < 1
    dy = rng.standard_normal(pooled.shape).astype(dtype)
    dz = L.relu_pool_backward(dy, (shape, code))
    expected_dz = np.zeros((3, h, w, f), dtype=dtype)
    for q, (i, j) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        expected_dz[:, i:2 * (h // 2):2, j:2 * (w // 2):2] = np.where(code == q, dy, 0)
    np.testing.assert_array_equal(dz, expected_dz)
    scale, shift = gamma * inv_std, beta - rng.standard_normal(f).astype(dtype)
    y_eval = centred.reshape(3, h, w, f) * scale
    y_eval += shift
    eval_pooled = L.batchnorm_eval_relu_pool(centred.reshape(3, h, w, f), gamma, shift, np.zeros(f, dtype),
                                             (1.0 / scale**2 * gamma**2 - 1e-5).astype(dtype), 1e-5)
    np.testing.assert_allclose(eval_pooled, numpy_relu_pool(y_eval)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_gradient_equals_the_numpy_one(dtype):
    rng = np.random.default_rng(2)
    xhat = rng.standard_normal((50, 4)).astype(dtype)
    inv_std, gamma = rng.uniform(0.5, 2, 4).astype(dtype), rng.uniform(0.5, 1.5, 4).astype(dtype)
    dy = rng.standard_normal((50, 4)).astype(dtype)
    dgamma, dbeta = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
    expected = dy - xhat * (dgamma / 50).astype(dtype)
    expected -= (dbeta / 50).astype(dtype)
    expected *= gamma * inv_std
    out = L.batchnorm_backward_dx_inplace(dy, (xhat, inv_std, gamma), dgamma, dbeta, 50)
    assert out is dy
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h, w", [(8, 6), (7, 9), (3, 2)])
def test_fused_pooling_batchnorm_backward_equals_the_unfused_one(h, w, dtype):
    """The batch-norm gradient behind the pooling, formed over xhat without the pooling's input
    gradient: its sums equal NumPy's over that gradient up to rounding, and given the same sums
    its input gradient equals the unfused one bit for bit (rows and columns the floor drops too)."""
    rng = np.random.default_rng(3)
    f, n = 4, 3
    centred = rng.standard_normal((n * h * w, f)).astype(dtype)
    var = rng.uniform(0.5, 2.0, f).astype(dtype)
    gamma, beta = rng.uniform(0.5, 1.5, f).astype(dtype), rng.standard_normal(f).astype(dtype)
    pooled, bn_cache, pool_cache = L.batchnorm_normalise_relu_pool(centred, var, gamma, beta, 1e-5, (n, h, w, f))
    dy = rng.standard_normal(pooled.shape).astype(dtype)
    dz = L.relu_pool_backward(dy, pool_cache).reshape(-1, f)
    dgamma, dbeta = L.batchnorm_backward_sums(dz, bn_cache)
    fused_dgamma, fused_dbeta = L.relu_pool_batchnorm_backward_sums(dy, pool_cache, bn_cache)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(fused_dgamma, dgamma, rtol=tol, atol=tol)
    np.testing.assert_allclose(fused_dbeta, dbeta, rtol=tol, atol=tol)
    expected = L.batchnorm_backward_dx_inplace(dz.copy(), bn_cache, dgamma, dbeta, dz.shape[0])
    got = L.relu_pool_batchnorm_backward_dx(dy, pool_cache, bn_cache, dgamma, dbeta, dz.shape[0])
    assert got.base is bn_cache[0] or got.base is bn_cache[0].base  # written over xhat
    np.testing.assert_array_equal(got.reshape(-1, f), expected)
