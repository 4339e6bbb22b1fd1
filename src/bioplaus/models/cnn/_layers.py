"""Layers of the NumPy CNN: forward and backward passes as plain functions.

Every feature map is stored channels-last, ``(n, height, width, channels)``
("NHWC"), so that a convolution is one im2col copy plus one matrix product
whose result *is* the next NHWC map (no transposes), and its input gradient one
product with the transposed weights plus a col2im scatter. The im2col copy is
made for chunks of images whose patch matrix fits in a bounded buffer
(:data:`PATCH_BUDGET_BYTES` by default), so a convolution's memory does not
grow with k*k*c beyond that buffer. The copies, the scatter and the fused batch
norm, ReLU and pooling passes are compiled loops (:mod:`._kernels`); the
products are BLAS's and the forward batch-norm statistics NumPy's. Long
patch rows are built and multiplied in chunks that stay in cache
(:func:`conv_patch_rows`). The functions work in the
dtype of their inputs: float32 in training, float64 in the gradient-check tests.

Shapes used below: ``n`` images, ``h x w`` spatial size, ``c`` input
channels, ``f`` output channels (filters), ``k`` kernel size, ``s`` stride,
``p`` zero padding (same on all four sides).
"""

from __future__ import annotations

import numpy as np

from bioplaus.models.cnn import _kernels as K


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


#: patch rows of at least this many bytes are built and multiplied in chunks of
#: :data:`PATCH_CACHE_BYTES` (see :func:`conv_patch_rows`)
CACHE_ROW_BYTES = 400

#: bytes of a patch chunk that stays in a core's cache between its im2col copy
#: and its product (measured on 2 MiB of L2: 1 MiB)
PATCH_CACHE_BYTES = 2**20


def conv_patch_rows(n, h, w, c, k, stride, padding, itemsize, max_patch_bytes=None):
    """Patch rows a convolution builds and multiplies at a time: as many as fit
    ``max_patch_bytes`` (default :data:`PATCH_BUDGET_BYTES`), and, for rows of
    at least :data:`CACHE_ROW_BYTES` (``k*k*c`` entries), as fit
    :data:`PATCH_CACHE_BYTES`; between 1 and ``n*ho*wo``.

    Long patch rows (wide inputs, large kernels) are multiplied while the
    chunk is in cache: BLAS's products run at 85-90 GFLOP/s then, against
    45-65 on a patch matrix of tens of MB, and the patches are rebuilt for the
    weight gradient rather than kept (rebuilding a cached chunk is cheaper
    than reading a large matrix back). Short rows (few input channels) gain
    nothing from small chunks: their matrix is kept whole when it fits."""
    budget = PATCH_BUDGET_BYTES if max_patch_bytes is None else max_patch_bytes
    ho = conv_output_size(h, k, stride, padding)
    wo = conv_output_size(w, k, stride, padding)
    row_bytes = max(k * k * c * itemsize, 1)
    if row_bytes >= CACHE_ROW_BYTES:
        budget = min(budget, PATCH_CACHE_BYTES)
    return int(min(max(budget // row_bytes, 1), max(n * ho * wo, 1)))


def _im2col(x, k, stride, padding, ho, wo, out=None, first=0, rows=None):
    """Patch matrix ``(rows, k*k*c)`` of NHWC maps x ``(n, h, w, c)``: rows
    ``first .. first + rows`` (default all ``n*ho*wo``) of the im2col matrix,
    columns ordered kernel row, kernel column, channel (zero in the padding:
    no padded copy of x is made).

    out: optional flat buffer of at least ``rows*k*k*c`` elements to write
    the patches into.
    """
    n, h, w, c = x.shape
    if rows is None:
        rows = n * ho * wo - first
    if out is None:
        cols = np.empty((rows, k * k * c), dtype=x.dtype)
    else:
        cols = out[: rows * k * k * c].reshape(rows, k * k * c)
    K.im2col(np.ascontiguousarray(x), k, stride, padding, ho, wo, first, cols)
    return cols


def _patch_chunks(x, k, stride, padding, ho, wo, step):
    """``(rows, cols)`` of consecutive chunks of ``step`` patch rows of x
    ``(n, h, w, c)``, built into one reused buffer: the row slice ``rows`` of
    ``(n*ho*wo, ...)`` and its patches ``(len(rows), k*k*c)`` (valid until the
    next step)."""
    x = np.ascontiguousarray(x)
    total = x.shape[0] * ho * wo
    buffer = np.empty(step * k * k * x.shape[3], dtype=x.dtype)
    for a in range(0, total, step):
        b = min(a + step, total)
        yield slice(a, b), _im2col(x, k, stride, padding, ho, wo, out=buffer, first=a, rows=b - a)


#: bytes of the patch-gradient chunk of :func:`conv_backward` worth keeping in
#: a core's L2 cache (it is written by one product and read back at once)
COL2IM_CACHE_BYTES = 2**20


def col2im_chunk_size(n, ho, wo, c, k, itemsize):
    """Images per patch-gradient chunk of :func:`conv_backward`'s input
    gradient: no more than the ``(n, ho, wo, c)`` product the former
    one-product-per-offset loop held (``n // (k*k)`` images), nor than
    :data:`COL2IM_CACHE_BYTES`; at least one image."""
    per_image = max(ho * wo * k * k * c * itemsize, 1)
    return int(max(1, min(n // (k * k), COL2IM_CACHE_BYTES // per_image)))


def _buffer(spare, shape, dtype):
    """``spare`` when it is a C-contiguous array of ``shape`` and ``dtype``, else a new empty one."""
    if (spare is not None and spare.shape == tuple(shape) and spare.dtype == dtype
            and spare.flags.c_contiguous):
        return spare
    return np.empty(shape, dtype=dtype)


def conv_forward(x, weight, stride, padding, max_patch_bytes=None, out=None, cols=None):
    """2-D convolution (cross-correlation) of NHWC maps.

    x: ``(n, h, w, c)``; weight: ``(k, k, c, f)``; returns ``(out, cache)``
    with out ``(n, ho, wo, f)``, ``ho = (h + 2p - k) // s + 1``.

    The im2col matrix ``(n*ho*wo, k*k*c)`` (columns ordered kernel row,
    kernel column, channel) is built and multiplied in chunks of
    :func:`conv_patch_rows` rows (bounded by ``max_patch_bytes``, default
    :data:`PATCH_BUDGET_BYTES`). When it is one chunk the matrix is kept in
    the cache for the backward pass, as it is no larger than the budget;
    otherwise only the input x is kept and :func:`conv_backward` rebuilds the
    patches chunk by chunk. The cache's last entry is :func:`conv_chunk_size`
    (images whose patches fit the budget).

    out, cols: optional arrays of a previous call to write the output
    ``(n*ho*wo, f)`` and the kept patch matrix into (used when their shapes
    match): the network passes its first block's buffers from one batch to the
    next, which spares the kernel's page faults of fresh large arrays.
    """
    n, h, w, c = x.shape
    k, _, _, f = weight.shape
    ho = conv_output_size(h, k, stride, padding)
    wo = conv_output_size(w, k, stride, padding)
    itemsize = x.dtype.itemsize
    chunk = conv_chunk_size(n, h, w, c, k, stride, padding, itemsize, max_patch_bytes)
    step = conv_patch_rows(n, h, w, c, k, stride, padding, itemsize, max_patch_bytes)
    weight2 = weight.reshape(k * k * c, f)
    out = _buffer(out, (n * ho * wo, f), np.result_type(x.dtype, weight.dtype))
    if step >= n * ho * wo:
        cols = _im2col(x, k, stride, padding, ho, wo,
                       out=_buffer(cols, (n * ho * wo, k * k * c), x.dtype).reshape(-1))
        np.matmul(cols, weight2, out=out)
        return out.reshape(n, ho, wo, f), (cols, None, x.shape, weight, stride, padding, step, chunk)
    for rows, chunk_cols in _patch_chunks(x, k, stride, padding, ho, wo, step):
        np.matmul(chunk_cols, weight2, out=out[rows])
    return out.reshape(n, ho, wo, f), (None, x, x.shape, weight, stride, padding, step, chunk)


def conv_backward(dout, cache, need_dx=True):
    """Gradients of :func:`conv_forward`.

    dout: ``(n, ho, wo, f)``. Returns ``(dx, dweight)``; dx is ``None`` when
    ``need_dx`` is false (the first layer needs no input gradient). The weight
    gradient uses the cached patch matrix, or rebuilds it chunk by chunk (same
    chunks as the forward pass) when the forward pass did not keep it.
    """
    cols, x, x_shape, weight, stride, padding, step, _ = cache
    n, h, w, c = x_shape
    k = weight.shape[0]
    f = weight.shape[3]
    _, ho, wo, _ = dout.shape
    dout2 = dout.reshape(-1, f)
    if cols is not None:
        dweight = (cols.T @ dout2).reshape(weight.shape)
    else:
        dweight2 = np.empty((k * k * c, f), dtype=dout.dtype)
        product = np.empty_like(dweight2)
        for rows, chunk_cols in _patch_chunks(x, k, stride, padding, ho, wo, step):
            if rows.start == 0:
                np.matmul(chunk_cols.T, dout2[rows], out=dweight2)
            else:
                np.matmul(chunk_cols.T, dout2[rows], out=product)
                dweight2 += product
        del chunk_cols  # a view of the patch buffer: release it before the input gradient
        dweight = dweight2.reshape(weight.shape)
    if not need_dx:
        return None, dweight
    # the patch gradients (rows of dout @ weight^T) of a few images at a time, each
    # chunk added back to the input positions it came from (col2im) while in cache
    dx = np.zeros((n, h, w, c), dtype=dout.dtype)
    weight_t = weight.reshape(k * k * c, f).T  # (f, k*k*c) view: BLAS reads it transposed
    per_image = ho * wo
    step = col2im_chunk_size(n, ho, wo, c, k, dout.dtype.itemsize)
    buffer = np.empty(step * per_image * k * k * c, dtype=dout.dtype)
    for a in range(0, n, step):
        b = min(a + step, n)
        dcols = buffer[: (b - a) * per_image * k * k * c].reshape((b - a) * per_image, k * k * c)
        np.matmul(dout2[a * per_image : b * per_image], weight_t, out=dcols)
        K.col2im_add(dcols, a, k, stride, padding, ho, wo, dx)
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


def batchnorm_backward_dx_inplace(dy, cache, dgamma, dbeta, m):
    """:func:`batchnorm_backward_dx` written over ``dy`` (m_shard, f) by one
    compiled pass: the same elementwise operations in the same order, so the
    same values to the last bit, without a temporary. Returns dy."""
    xhat, inv_std, gamma = cache
    mean_dgamma = (dgamma / m).astype(dy.dtype, copy=False)
    mean_dbeta = (dbeta / m).astype(dy.dtype, copy=False)
    scale = (gamma * inv_std).astype(dy.dtype, copy=False)
    K.batchnorm_backward_dx(dy, np.ascontiguousarray(xhat), mean_dgamma, mean_dbeta, scale)
    return dy


def batchnorm_backward(dy, cache):
    """Gradients of :func:`batchnorm_forward_train`: ``(dx, dgamma, dbeta)``."""
    dgamma, dbeta = batchnorm_backward_sums(dy, cache)
    return batchnorm_backward_dx(dy, cache, dgamma, dbeta, dy.shape[0]), dgamma, dbeta


# ---------------------------------------------------------------------------
# ReLU + 2x2 max pool (fused: relu(max(...)) == max(relu(...)))
# ---------------------------------------------------------------------------


def _pooled(shape, dtype):
    """Empty pooled map and window codes of NHWC maps of ``shape``."""
    n, h, w, f = shape
    pooled_shape = (n, pool_output_size(h), pool_output_size(w), f)
    return np.empty(pooled_shape, dtype=dtype), np.empty(pooled_shape, dtype=np.int8)


def relu_pool_forward(x):
    """ReLU then 2x2 max pooling with stride 2 (floor) of NHWC maps.

    x: ``(n, h, w, f)``; returns ``(y, cache)`` with y ``(n, h//2, w//2, f)``
    and cache ``(x.shape, code)``. Pooling is applied first and ReLU to the
    4x smaller result, which gives the same values and gradients. Each window
    routes its gradient to one element (the first maximum in the order
    top-left, top-right, bottom-left, bottom-right), coded per pooled value in
    one int8: 0..3, or -1 when the pooled value is not positive (see
    :mod:`._kernels`).
    """
    return batchnorm_relu_pool_forward(x.reshape(-1, x.shape[-1]), np.ones(x.shape[-1], x.dtype),
                                       np.zeros(x.shape[-1], x.dtype), x.shape)


def batchnorm_relu_pool_forward(xhat, gamma, beta, shape):
    """:func:`relu_pool_forward` of the batch-norm output ``y = xhat * gamma + beta``
    without forming y: xhat ``(m, f)`` is read as NHWC maps of ``shape`` and each
    window's four values of y are formed and compared in one compiled pass
    (``y = xhat * gamma``, ``y += beta``, rounded as NumPy's two steps)."""
    pooled, code = _pooled(shape, xhat.dtype)
    K.affine_relu_pool(np.ascontiguousarray(xhat).reshape(shape), False, gamma, gamma, beta, pooled, code)
    return pooled, (tuple(shape), code)


def batchnorm_normalise_relu_pool(centred, var, gamma, beta, eps, shape):
    """:func:`batchnorm_normalise` of ``centred`` (m, f) in place followed by
    :func:`batchnorm_relu_pool_forward`, in one compiled pass over the map.
    Returns ``(pooled, bn_cache, pool_cache)``."""
    inv_std = (1.0 / np.sqrt(var + eps)).astype(centred.dtype, copy=False)
    pooled, code = _pooled(shape, centred.dtype)
    K.affine_relu_pool(centred.reshape(shape), True, inv_std, gamma, beta, pooled, code)
    return pooled, (centred, inv_std, gamma), (tuple(shape), code)


def batchnorm_eval_relu_pool(x, gamma, beta, running_mean, running_var, eps):
    """Prediction's batch norm (running statistics, as :func:`batchnorm_forward_eval`),
    ReLU and 2x2 max pooling of NHWC maps x ``(n, h, w, f)`` in one compiled pass."""
    scale = gamma / np.sqrt(running_var + eps)
    shift = beta - running_mean * scale
    pooled, _ = _pooled(x.shape, x.dtype)
    K.affine_relu_pool_eval(np.ascontiguousarray(x), scale.astype(x.dtype, copy=False),
                            shift.astype(x.dtype, copy=False),
                            pooled)
    return pooled


def relu_pool_batchnorm_backward_sums(dy, pool_cache, bn_cache):
    """``(dgamma, dbeta)`` (f,) of one shard behind :func:`batchnorm_normalise_relu_pool`,
    from the pooled gradient dy without forming the pooling's input gradient (a window's
    gradient reaches one element: :mod:`._kernels`); the sums are float64, returned in dy's
    dtype. Equals :func:`batchnorm_backward_sums` of :func:`relu_pool_backward` up to the
    rounding of the summation order."""
    shape, code = pool_cache
    xhat = bn_cache[0]
    f = shape[-1]
    dgamma, dbeta = np.zeros(f), np.zeros(f)
    K.relu_pool_batchnorm_sums(np.ascontiguousarray(dy), code, xhat.reshape(shape), dgamma, dbeta)
    return dgamma.astype(dy.dtype), dbeta.astype(dy.dtype)


def relu_pool_batchnorm_backward_dx(dy, pool_cache, bn_cache, dgamma, dbeta, m):
    """The convolution output's gradient ``(n, h, w, f)`` of one shard behind
    :func:`batchnorm_normalise_relu_pool`, given the batch totals dgamma, dbeta and row
    count m, written over the cached xhat (which the backward pass no longer needs) in one
    compiled pass: :func:`batchnorm_backward_dx` of :func:`relu_pool_backward`'s gradient,
    the same operations per element."""
    shape, code = pool_cache
    xhat, inv_std, gamma = bn_cache
    mean_dgamma = (dgamma / m).astype(dy.dtype, copy=False)
    mean_dbeta = (dbeta / m).astype(dy.dtype, copy=False)
    scale = (gamma * inv_std).astype(dy.dtype, copy=False)
    dz = xhat.reshape(shape)
    K.relu_pool_batchnorm_dx(np.ascontiguousarray(dy), code, dz, mean_dgamma, mean_dbeta, scale,
                             dy.dtype.type(0))
    return dz


def relu_pool_backward(dy, cache):
    """Gradient of :func:`relu_pool_forward`: dx ``(n, h, w, f)`` (zero in the
    rows/columns dropped by the floor)."""
    x_shape, code = cache
    dx = np.empty(x_shape, dtype=dy.dtype)
    K.relu_pool_backward(np.ascontiguousarray(dy), code, dx)
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
