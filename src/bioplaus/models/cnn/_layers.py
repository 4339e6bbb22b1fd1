"""Layers of the NumPy CNN: forward and backward passes as plain functions.

Every feature map is stored channels-last, ``(n, height, width, channels)``
("NHWC"), so that a convolution is one im2col copy through a strided view plus
one matrix product whose result *is* the next NHWC map (no transposes). The
im2col copy is made for chunks of images whose patch matrix fits in a bounded
buffer (:data:`PATCH_BUDGET_BYTES` by default), so a convolution's memory does
not grow with k*k*c beyond that buffer. The functions work in the dtype of
their inputs: float32 in training, float64 in the gradient-check tests.

Shapes used below: ``n`` images, ``h x w`` spatial size, ``c`` input
channels, ``f`` output channels (filters), ``k`` kernel size, ``s`` stride,
``p`` zero padding (same on all four sides).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis: ``(size + 2p - k) // s + 1``.

    Can be zero or negative, which means the kernel does not fit.
    """
    return (size + 2 * padding - kernel) // stride + 1


def pool_output_size(size: int) -> int:
    """Output length of 2x2 / stride-2 max pooling along one axis (floor: an odd
    last row or column is dropped, as PyTorch's ``ceil_mode=False``)."""
    return size // 2


# ---------------------------------------------------------------------------
# convolution (no bias: the batch norm that follows has its own shift)
# ---------------------------------------------------------------------------


#: default upper bound of the im2col patch buffer of one convolution call
#: (bytes); see :func:`conv_forward`
PATCH_BUDGET_BYTES = 64 * 2**20


def conv_chunk_size(n, h, w, c, k, stride, padding, itemsize, max_patch_bytes=None):
    """Images whose im2col patches fit in ``max_patch_bytes`` (default
    :data:`PATCH_BUDGET_BYTES`): between 1 and ``n``. One image's patches take
    ``ho * wo * k * k * c * itemsize`` bytes."""
    budget = PATCH_BUDGET_BYTES if max_patch_bytes is None else max_patch_bytes
    ho = conv_output_size(h, k, stride, padding)
    wo = conv_output_size(w, k, stride, padding)
    per_image = max(ho * wo * k * k * c * itemsize, 1)
    return int(min(max(budget // per_image, 1), max(n, 1)))


def _im2col(x, k, stride, padding, ho, wo, out=None, padded=None):
    """Patch matrix ``(n*ho*wo, k*k*c)`` of NHWC maps x ``(n, h, w, c)``,
    columns ordered kernel row, kernel column, channel.

    out: optional flat buffer of at least ``n*ho*wo*k*k*c`` elements to write
    the patches into; padded: optional zero-bordered buffer ``(>= n, h+2p,
    w+2p, c)`` whose interior receives x (its border must be zero).
    """
    n, h, w, c = x.shape
    if padding:
        if padded is None:
            xp = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=x.dtype)
        else:
            xp = padded[:n]
        xp[:, padding : padding + h, padding : padding + w, :] = x
    else:
        xp = x
    # (n, hp-k+1, wp-k+1, c, k, k) view -> stride -> (n, ho, wo, k, k, c)
    windows = sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    windows = windows[:, :ho, :wo].transpose(0, 1, 2, 4, 5, 3)
    size = n * ho * wo * k * k * c
    if out is None:
        cols = np.empty((n, ho, wo, k, k, c), dtype=x.dtype)
    else:
        cols = out[:size].reshape(n, ho, wo, k, k, c)
    np.copyto(cols, windows)
    return cols.reshape(n * ho * wo, k * k * c)


class _PatchChunks:
    """Patch matrices of consecutive chunks of ``chunk`` images of x
    ``(n, h, w, c)``, built into one reused buffer (and one reused padded
    buffer): ``for rows, cols in _PatchChunks(...)`` yields the output-row
    slice ``rows`` of ``(n*ho*wo, ...)`` and its patches ``(len(rows), k*k*c)``
    (valid until the next step)."""

    def __init__(self, x, k, stride, padding, ho, wo, chunk):
        self.x, self.k, self.stride, self.padding = x, k, stride, padding
        self.ho, self.wo, self.chunk = ho, wo, chunk

    def __iter__(self):
        x, k, p, chunk = self.x, self.k, self.padding, self.chunk
        n, h, w, c = x.shape
        per_image = self.ho * self.wo
        buffer = np.empty(chunk * per_image * k * k * c, dtype=x.dtype)
        padded = np.zeros((chunk, h + 2 * p, w + 2 * p, c), dtype=x.dtype) if p else None
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            cols = _im2col(x[a:b], k, self.stride, p, self.ho, self.wo, out=buffer, padded=padded)
            yield slice(a * per_image, b * per_image), cols


def conv_forward(x, weight, stride, padding, max_patch_bytes=None):
    """2-D convolution (cross-correlation) of NHWC maps.

    x: ``(n, h, w, c)``; weight: ``(k, k, c, f)``; returns ``(out, cache)``
    with out ``(n, ho, wo, f)``, ``ho = (h + 2p - k) // s + 1``.

    The im2col matrix ``(n*ho*wo, k*k*c)`` (columns ordered kernel row,
    kernel column, channel) is built for chunks of images whose patches fit in
    ``max_patch_bytes`` (default :data:`PATCH_BUDGET_BYTES`). When all n images
    fit (one chunk) the matrix is kept in the cache for the backward pass, as
    it is no larger than the budget; otherwise only the input x is kept and
    :func:`conv_backward` rebuilds the patches chunk by chunk.
    """
    n, h, w, c = x.shape
    k, _, _, f = weight.shape
    ho = conv_output_size(h, k, stride, padding)
    wo = conv_output_size(w, k, stride, padding)
    chunk = conv_chunk_size(n, h, w, c, k, stride, padding, x.dtype.itemsize, max_patch_bytes)
    weight2 = weight.reshape(k * k * c, f)
    if chunk >= n:
        cols = _im2col(x, k, stride, padding, ho, wo)
        out = cols @ weight2
        return out.reshape(n, ho, wo, f), (cols, None, x.shape, weight, stride, padding, chunk)
    out = np.empty((n * ho * wo, f), dtype=np.result_type(x.dtype, weight.dtype))
    for rows, cols in _PatchChunks(x, k, stride, padding, ho, wo, chunk):
        np.matmul(cols, weight2, out=out[rows])
    return out.reshape(n, ho, wo, f), (None, x, x.shape, weight, stride, padding, chunk)


def conv_backward(dout, cache, need_dx=True):
    """Gradients of :func:`conv_forward`.

    dout: ``(n, ho, wo, f)``. Returns ``(dx, dweight)``; dx is ``None`` when
    ``need_dx`` is false (the first layer needs no input gradient). The weight
    gradient uses the cached patch matrix, or rebuilds it chunk by chunk (same
    chunks as the forward pass) when the forward pass did not keep it.
    """
    cols, x, x_shape, weight, stride, padding, chunk = cache
    n, h, w, c = x_shape
    k = weight.shape[0]
    f = weight.shape[3]
    _, ho, wo, _ = dout.shape
    dout2 = dout.reshape(-1, f)
    if cols is not None:
        dweight = (cols.T @ dout2).reshape(weight.shape)
    else:
        dweight2 = np.zeros((k * k * c, f), dtype=dout.dtype)
        product = np.empty_like(dweight2)
        for rows, chunk_cols in _PatchChunks(x, k, stride, padding, ho, wo, chunk):
            np.matmul(chunk_cols.T, dout2[rows], out=product)
            dweight2 += product
        del chunk_cols  # a view of the patch buffer: release it before the input gradient
        dweight = dweight2.reshape(weight.shape)
    if not need_dx:
        return None, dweight
    dxp = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=dout.dtype)
    span_h = stride * (ho - 1) + 1
    span_w = stride * (wo - 1) + 1
    # col2im as one (n*ho*wo, f) @ (f, c) product per kernel offset, each added
    # to the strided window of the padded input it came from (needs no patches)
    weight_t = np.ascontiguousarray(weight.transpose(0, 1, 3, 2))  # (k, k, f, c)
    part = np.empty((n, ho, wo, c), dtype=dout.dtype)
    part2 = part.reshape(-1, c)
    for i in range(k):
        for j in range(k):
            np.matmul(dout2, weight_t[i, j], out=part2)
            dxp[:, i : i + span_h : stride, j : j + span_w : stride, :] += part
    dx = dxp[:, padding : padding + h, padding : padding + w, :]
    return dx, dweight


# ---------------------------------------------------------------------------
# batch normalisation over (n, h, w) per channel
# ---------------------------------------------------------------------------


def column_sums(x):
    """Per-column sums of ``(m, f)`` as one matrix-vector product (much faster
    than ``x.sum(axis=0)`` for few columns)."""
    return np.ones(x.shape[0], dtype=x.dtype) @ x


def batchnorm_centre(x, mean, out=None):
    """``(x - mean, per-column sum of squares of it)`` for x ``(m, f)``; the
    difference is written into ``out`` when given (``out=x``: in place)."""
    centred = np.subtract(x, mean, out=out)
    return centred, np.einsum("ij,ij->j", centred, centred)


def batchnorm_normalise(centred, var, gamma, eps):
    """Normalise ``centred`` (m, f) in place by ``var`` (f,): it becomes
    ``xhat``; returns the cache ``(xhat, inv_std, gamma)`` of the backward pass."""
    inv_std = (1.0 / np.sqrt(var + eps)).astype(centred.dtype, copy=False)
    centred *= inv_std
    return centred, inv_std, gamma


def batchnorm_scale(centred, var, gamma, beta, eps):
    """Normalise ``centred`` (m, f) in place by ``var`` (f,), then scale and
    shift; returns ``(y, cache)`` for :func:`batchnorm_backward`."""
    cache = batchnorm_normalise(centred, var, gamma, eps)
    y = cache[0] * gamma
    y += beta
    return y, cache


def batchnorm_forward_train(x, gamma, beta, eps):
    """Batch norm with the statistics of this batch.

    x: ``(m, f)`` (a NHWC map flattened over n, h, w); gamma, beta: ``(f,)``.
    Returns ``(y, mean, var, cache)``; var is the biased batch variance.
    The network computes the same in shards (sums combined across shards).
    """
    m = x.shape[0]
    mean = column_sums(x) / m
    centred, squares = batchnorm_centre(x, mean)
    var = squares / m
    y, cache = batchnorm_scale(centred, var, gamma, beta, eps)
    return y, mean, var, cache


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps, out=None):
    """Batch norm with running statistics (prediction). x: ``(m, f)``; the
    result is written into ``out`` when given (``out=x``: in place)."""
    scale = gamma / np.sqrt(running_var + eps)
    shift = beta - running_mean * scale
    y = np.multiply(x, scale.astype(x.dtype, copy=False), out=out)
    y += shift.astype(x.dtype, copy=False)
    return y


def batchnorm_backward_sums(dy, cache):
    """``(dgamma, dbeta)`` (f,) of one shard: sums over its rows."""
    xhat = cache[0]
    return np.einsum("ij,ij->j", dy, xhat), column_sums(dy)


def batchnorm_backward_dx(dy, cache, dgamma, dbeta, m):
    """Input gradient of batch norm for one shard, given the batch totals
    dgamma, dbeta and the batch's row count m:
    ``gamma * inv_std * (dy - dbeta/m - xhat * dgamma/m)``."""
    xhat, inv_std, gamma = cache
    dx = xhat * (dgamma / m).astype(dy.dtype, copy=False)
    np.subtract(dy, dx, out=dx)
    dx -= (dbeta / m).astype(dy.dtype, copy=False)
    dx *= gamma * inv_std
    return dx


#: rows of the temporary of :func:`batchnorm_backward_dx_inplace` (bounds its memory)
BN_BACKWARD_ROWS = 16384


def batchnorm_backward_dx_inplace(dy, cache, dgamma, dbeta, m, rows=BN_BACKWARD_ROWS):
    """:func:`batchnorm_backward_dx` written over ``dy`` (m_shard, f), ``rows``
    rows at a time: the same elementwise operations in the same order, so the
    same values to the last bit, without an input-sized temporary. Returns dy."""
    xhat, inv_std, gamma = cache
    mean_dgamma = (dgamma / m).astype(dy.dtype, copy=False)
    mean_dbeta = (dbeta / m).astype(dy.dtype, copy=False)
    scale = gamma * inv_std
    for a in range(0, dy.shape[0], rows):
        part = dy[a:a + rows]
        np.subtract(part, xhat[a:a + rows] * mean_dgamma, out=part)
        part -= mean_dbeta
        part *= scale
    return dy


def batchnorm_backward(dy, cache):
    """Gradients of :func:`batchnorm_forward_train`: ``(dx, dgamma, dbeta)``."""
    dgamma, dbeta = batchnorm_backward_sums(dy, cache)
    return batchnorm_backward_dx(dy, cache, dgamma, dbeta, dy.shape[0]), dgamma, dbeta


# ---------------------------------------------------------------------------
# ReLU + 2x2 max pool (fused: relu(max(...)) == max(relu(...)))
# ---------------------------------------------------------------------------


def _quarters(x, hp, wp):
    """The four strided views (top-left, top-right, bottom-left, bottom-right)
    of the 2x2 pooling windows of ``x`` (n, h, w, f), each ``(n, hp, wp, f)``."""
    return (
        x[:, 0 : 2 * hp : 2, 0 : 2 * wp : 2],
        x[:, 0 : 2 * hp : 2, 1 : 2 * wp : 2],
        x[:, 1 : 2 * hp : 2, 0 : 2 * wp : 2],
        x[:, 1 : 2 * hp : 2, 1 : 2 * wp : 2],
    )


def relu_pool_forward(x):
    """ReLU then 2x2 max pooling with stride 2 (floor) of NHWC maps.

    x: ``(n, h, w, f)``; returns ``(y, cache)`` with y ``(n, h//2, w//2, f)``.
    Pooling is applied first and ReLU to the 4x smaller result, which gives
    the same values and gradients. Each window routes its gradient to one
    element (the first maximum in the order top-left, top-right, bottom-left,
    bottom-right).
    """
    n, h, w, f = x.shape
    hp, wp = pool_output_size(h), pool_output_size(w)
    a, b, c, d = _quarters(x, hp, wp)
    right_top = b > a
    top = np.maximum(a, b)
    right_bottom = d > c
    bottom = np.maximum(c, d)
    use_bottom = bottom > top
    y = np.maximum(top, bottom, out=top)
    np.maximum(y, 0, out=y)
    return y, (x.shape, right_top, right_bottom, use_bottom, y > 0)


def batchnorm_relu_pool_forward(xhat, gamma, beta, shape):
    """:func:`relu_pool_forward` of the batch-norm output ``y = xhat * gamma + beta``
    without forming y: xhat ``(m, f)`` is read as NHWC maps of ``shape`` and each
    of the four window quarters of y is formed and compared in turn (the same
    operations per element, so the same values and cache as
    ``relu_pool_forward(batchnorm_scale(...)[0])``), at a quarter of y's size
    at a time."""
    n, h, w, f = shape
    hp, wp = pool_output_size(h), pool_output_size(w)
    quarters = _quarters(xhat.reshape(shape), hp, wp)

    def affine(q):
        y = q * gamma
        y += beta
        return y

    a, b = affine(quarters[0]), affine(quarters[1])
    right_top = b > a
    top = np.maximum(a, b, out=a)
    del b
    c, d = affine(quarters[2]), affine(quarters[3])
    right_bottom = d > c
    bottom = np.maximum(c, d, out=c)
    del d
    use_bottom = bottom > top
    y = np.maximum(top, bottom, out=top)
    np.maximum(y, 0, out=y)
    return y, (tuple(shape), right_top, right_bottom, use_bottom, y > 0)


def relu_pool_backward(dy, cache):
    """Gradient of :func:`relu_pool_forward`: dx ``(n, h, w, f)`` (zero in the
    rows/columns dropped by the floor)."""
    x_shape, right_top, right_bottom, use_bottom, positive = cache
    n, h, w, f = x_shape
    hp, wp = dy.shape[1], dy.shape[2]
    if h == 2 * hp and w == 2 * wp:  # every element lies in a window
        dx = np.empty(x_shape, dtype=dy.dtype)
    else:
        dx = np.zeros(x_shape, dtype=dy.dtype)
    a, b, c, d = _quarters(dx, hp, wp)
    g = dy * positive
    g_bottom = np.multiply(g, use_bottom, out=c)  # formed in its bottom-left quarter of dx
    g_top = np.subtract(g, g_bottom, out=g)
    np.multiply(g_top, right_top, out=b)
    np.subtract(g_top, b, out=a)
    np.multiply(g_bottom, right_bottom, out=d)
    np.subtract(g_bottom, d, out=c)
    return dx


# ---------------------------------------------------------------------------
# linear read-out and softmax cross-entropy
# ---------------------------------------------------------------------------


def linear_forward(x, weight, bias):
    """x ``(n, d)`` @ weight ``(d, classes)`` + bias ``(classes,)``."""
    out = x @ weight
    out += bias
    return out


def linear_backward(dout, x, weight):
    """Gradients of :func:`linear_forward`: ``(dx, dweight, dbias)``."""
    return dout @ weight.T, x.T @ dout, dout.sum(axis=0)


def softmax(logits):
    """Row-wise softmax of ``(n, classes)`` logits (max-shifted)."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def softmax_cross_entropy(logits, y_index):
    """Mean cross-entropy of ``(n, classes)`` logits against integer targets
    ``(n,)``; returns ``(loss, dlogits)`` with dlogits ``(n, classes)``."""
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    rows = np.arange(n)
    loss = float(np.mean(log_norm - shifted[rows, y_index]))
    dlogits = np.exp(shifted - log_norm[:, None])
    dlogits[rows, y_index] -= 1.0
    dlogits /= n
    return loss, dlogits
