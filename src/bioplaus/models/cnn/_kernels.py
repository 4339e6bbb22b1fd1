"""Compiled (numba) loops of the CNN's layers: im2col and col2im of NHWC maps, and the fused
batch-norm scaling, ReLU and 2x2 max pooling, forward and backward.

These replace NumPy strided copies and chains of whole-array temporaries by one pass over the
data each. Their elementwise steps do the same floating-point operations in the same order as
the NumPy code they replaced (``_layers`` documents the operations), so those results are the
same to the last bit: im2col copies; col2im adds each input position's contributions in the
order of the kernel offsets (the order of the former one-product-per-offset loop); products
and sums are rounded as NumPy's (no fused multiply-add: numba does not contract without
``fastmath``). The exception is :func:`relu_pool_batchnorm_sums`, whose float64 sums over the
pooling windows replace NumPy's float32 sums over the whole map (equal up to rounding). The functions write into arrays the caller allocates (so that tracemalloc and
the memory model see every buffer) and release the GIL (the network runs shards in threads).

A window of the pooling is coded in one int8 per pooled value: the index of the element its
gradient goes to (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right; the first maximum in
that order), or -1 when the pooled value is not positive (ReLU passes no gradient).
"""

from __future__ import annotations

from numba import njit, uint64

# Compiled functions are cached next to this file (or in numba's user cache when that is not
# writable): only the first process on a machine compiles.
_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def im2col(x, k, stride, padding, ho, wo, first, out):
    """Patch rows ``first .. first + len(out)`` of C-contiguous NHWC maps x ``(n, h, w, c)``
    (row ``(b * ho + oy) * wo + ox`` is output position ``(oy, ox)`` of image b) into out
    ``(rows, k*k*c)`` (columns ordered kernel row, kernel column, channel; zero outside the
    map: the padding).

    A patch row of one kernel row is ``k*c`` consecutive entries of the map's row (its columns
    and channels), copied as one span. Flat indices are unsigned, which spares numba's
    negative-index wraparound per element (twice as fast)."""
    n, h, w, c = x.shape
    src = x.reshape(-1)
    dst = out.reshape(-1)
    span = k * c
    row_len = k * span
    for rr in range(out.shape[0]):
        r = first + rr
        b = r // (ho * wo)
        oy = (r // wo) % ho
        ox = r % wo
        y0 = oy * stride - padding
        x0 = ox * stride - padding
        lo = min(max(0, -x0), k) * c  # first entry of the span inside the map
        hi = max(min(k, w - x0) * c, lo)  # past its last
        o = rr * row_len
        for i in range(k):
            iy = y0 + i
            d = uint64(o + i * span)
            if iy < 0 or iy >= h:
                for t in range(uint64(span)):
                    dst[d + t] = 0
                continue
            for t in range(uint64(lo)):
                dst[d + t] = 0
            sd = uint64(((b * h + iy) * w + x0) * c + lo)
            dd = d + uint64(lo)
            for t in range(uint64(hi - lo)):
                dst[dd + t] = src[sd + t]
            for t in range(uint64(hi), uint64(span)):
                dst[d + t] = 0


@njit(**_JIT)
def col2im_add(dcols, first, k, stride, padding, ho, wo, dx):
    """Add the patch gradients dcols ``(m*ho*wo, k*k*c)`` (C-contiguous) of images
    ``first .. first+m`` into C-contiguous dx ``(n, h, w, c)`` (entries falling in the padding
    are dropped).

    Output positions are visited last to first, so that each input element receives its
    contributions in increasing kernel offset (row, then column): the order of a sum over
    offsets of whole-map products."""
    n, h, w, c = dx.shape
    m = dcols.shape[0] // (ho * wo)
    src = dcols.reshape(-1)
    dst = dx.reshape(-1)
    span = k * c
    row_len = k * span
    for bb in range(m - 1, -1, -1):
        b = first + bb
        for oy in range(ho - 1, -1, -1):
            y0 = oy * stride - padding
            for ox in range(wo - 1, -1, -1):
                x0 = ox * stride - padding
                lo = min(max(0, -x0), k) * c
                hi = max(min(k, w - x0) * c, lo)
                o = ((bb * ho + oy) * wo + ox) * row_len
                for i in range(k):
                    iy = y0 + i
                    if iy < 0 or iy >= h:
                        continue
                    dd = uint64(((b * h + iy) * w + x0) * c + lo)
                    sd = uint64(o + i * span + lo)
                    for t in range(uint64(hi - lo)):
                        dst[dd + t] += src[sd + t]


@njit(inline="always")
def _maximum(a, b):
    """``np.maximum`` of two scalars: NaN when either is NaN."""
    if a != a:
        return a
    if b != b:
        return b
    return a if a >= b else b


@njit(inline="always")
def _affine_window(zf, e, uf, row, ch, g, s):
    """``z * g + s`` (multiply, then add: two roundings) at the four elements of the 2x2 window whose
    top-left element of channel ``ch`` is ``zf[e + ch]`` (``uf`` channels, ``row`` elements per row)."""
    a = zf[e + ch] * g
    a += s
    b = zf[e + uf + ch] * g
    b += s
    c = zf[e + row + ch] * g
    c += s
    d = zf[e + row + uf + ch] * g
    d += s
    return a, b, c, d


@njit(**_JIT)
def affine_relu_pool(z, scale_first, inv_std, gamma, beta, pooled, code):
    """ReLU and 2x2 max pooling (stride 2, floor) of ``y = xhat * gamma + beta``.

    z ``(n, h, w, f)`` (C-contiguous): the centred convolution output when ``scale_first`` (it
    is normalised in place, ``xhat = z * inv_std``, every element, those the floor drops too),
    else xhat itself. Writes pooled ``(n, h//2, w//2, f)`` and the window codes (int8, same
    shape). One image at a time (its map stays in cache between the two passes); flat
    unsigned indices, as :func:`im2col`."""
    n, h, w, f = z.shape
    hp, wp = pooled.shape[1], pooled.shape[2]
    zf = z.reshape(-1)
    pf = pooled.reshape(-1)
    cf = code.reshape(-1)
    uf = uint64(f)
    row = uint64(w * f)
    for b in range(n):
        if scale_first:
            base = uint64(b * h * w * f)
            for r in range(uint64(h * w)):
                e = base + r * uf
                for ch in range(uf):
                    zf[e + ch] *= inv_std[ch]
        for py in range(hp):
            for px in range(wp):
                e = uint64(((b * h + 2 * py) * w + 2 * px) * f)
                o = uint64(((b * hp + py) * wp + px) * f)
                for ch in range(uf):
                    a, bq, c, d = _affine_window(zf, e, uf, row, ch, gamma[ch], beta[ch])
                    top = _maximum(a, bq)
                    bottom = _maximum(c, d)
                    if bottom > top:
                        index = 3 if d > c else 2
                    else:
                        index = 1 if bq > a else 0
                    v = _maximum(top, bottom)
                    if v > 0:
                        pf[o + ch] = v
                        cf[o + ch] = index
                    else:  # ReLU (NaN stays NaN; divergence is detected downstream)
                        pf[o + ch] = v if v != v else 0
                        cf[o + ch] = -1


@njit(**_JIT)
def affine_relu_pool_eval(z, scale, shift, pooled):
    """Prediction's ReLU and 2x2 max pooling of ``y = z * scale + shift`` (the batch norm with
    running statistics); z ``(n, h, w, f)`` (C-contiguous), pooled ``(n, h//2, w//2, f)``."""
    n, h, w, f = z.shape
    hp, wp = pooled.shape[1], pooled.shape[2]
    zf = z.reshape(-1)
    pf = pooled.reshape(-1)
    uf = uint64(f)
    row = uint64(w * f)
    for b in range(n):
        for py in range(hp):
            for px in range(wp):
                e = uint64(((b * h + 2 * py) * w + 2 * px) * f)
                o = uint64(((b * hp + py) * wp + px) * f)
                for ch in range(uf):
                    a, bq, c, d = _affine_window(zf, e, uf, row, ch, scale[ch], shift[ch])
                    v = _maximum(_maximum(a, bq), _maximum(c, d))
                    pf[o + ch] = v if (v > 0 or v != v) else 0


@njit(**_JIT)
def relu_pool_backward(dy, code, dx):
    """Gradient of :func:`affine_relu_pool` w.r.t. y: dx ``(n, h, w, f)`` (C-contiguous) holds
    dy at each window's coded element and zero elsewhere (the rows and columns the floor drops
    too). One image at a time: its map is zeroed, then each window's element is set."""
    n, h, w, f = dx.shape
    hp, wp = dy.shape[1], dy.shape[2]
    df = dx.reshape(-1)
    gf = dy.reshape(-1)
    cf = code.reshape(-1)
    uf = uint64(f)
    row = uint64(w * f)
    size = uint64(h * w * f)
    for b in range(n):
        base = uint64(b) * size
        for t in range(size):
            df[base + t] = 0
        for py in range(hp):
            for px in range(wp):
                e = uint64(((b * h + 2 * py) * w + 2 * px) * f)
                o = uint64(((b * hp + py) * wp + px) * f)
                for ch in range(uf):
                    index = cf[o + ch]
                    if index >= 0:
                        at = e + ch
                        if index >= 2:
                            at += row
                        if index & 1:
                            at += uf
                        df[at] = gf[o + ch]


@njit(**_JIT)
def batchnorm_backward_dx(dz, xhat, mean_dgamma, mean_dbeta, scale):
    """Batch norm's input gradient over dz ``(m, f)`` in place (both C-contiguous):
    ``((dz - xhat * mean_dgamma) - mean_dbeta) * scale`` per column."""
    m, f = dz.shape
    df = dz.reshape(-1)
    xf = xhat.reshape(-1)
    uf = uint64(f)
    for r in range(uint64(m)):
        e = r * uf
        for ch in range(uf):
            t = xf[e + ch] * mean_dgamma[ch]
            v = df[e + ch] - t
            v -= mean_dbeta[ch]
            v *= scale[ch]
            df[e + ch] = v


@njit(**_JIT)
def relu_pool_batchnorm_sums(dy, code, xhat, dgamma, dbeta):
    """Batch norm's parameter gradients behind the pooling, without forming the pooling's input
    gradient: each positive window passes its dy to its coded element, so per channel
    ``dbeta += dy`` and ``dgamma += dy * xhat[element]`` over the windows (float64 sums added
    into dgamma, dbeta ``(f,)``). xhat ``(n, h, w, f)``, dy and code ``(n, h//2, w//2, f)``,
    C-contiguous."""
    n, h, w, f = xhat.shape
    hp, wp = dy.shape[1], dy.shape[2]
    xf = xhat.reshape(-1)
    gf = dy.reshape(-1)
    cf = code.reshape(-1)
    uf = uint64(f)
    row = uint64(w * f)
    for b in range(n):
        for py in range(hp):
            for px in range(wp):
                e = uint64(((b * h + 2 * py) * w + 2 * px) * f)
                o = uint64(((b * hp + py) * wp + px) * f)
                for ch in range(uf):
                    index = cf[o + ch]
                    if index >= 0:
                        at = e + ch
                        if index >= 2:
                            at += row
                        if index & 1:
                            at += uf
                        g = gf[o + ch]
                        dbeta[ch] += g
                        dgamma[ch] += g * xf[at]


@njit(inline="always")
def _bn_dx(g, xh, mean_dgamma, mean_dbeta, scale):
    t = xh * mean_dgamma
    v = g - t
    v -= mean_dbeta
    v *= scale
    return v


@njit(**_JIT)
def relu_pool_batchnorm_dx(dy, code, xhat, mean_dgamma, mean_dbeta, scale, zero):
    """Batch norm's input gradient behind the pooling, written over xhat ``(n, h, w, f)``
    (C-contiguous): ``((g - xhat * mean_dgamma) - mean_dbeta) * scale`` where g is a window's dy
    at its coded element and zero elsewhere (the rows and columns the floor drops too). zero:
    0 of the map's dtype (so that float32 stays float32: no double rounding)."""
    n, h, w, f = xhat.shape
    hp, wp = dy.shape[1], dy.shape[2]
    xf = xhat.reshape(-1)
    gf = dy.reshape(-1)
    cf = code.reshape(-1)
    uf = uint64(f)
    row = uint64(w * f)
    for b in range(n):
        for py in range(hp):
            for px in range(wp):
                e = uint64(((b * h + 2 * py) * w + 2 * px) * f)
                o = uint64(((b * hp + py) * wp + px) * f)
                for ch in range(uf):
                    index = cf[o + ch]
                    g = gf[o + ch]
                    md, mb, sc = mean_dgamma[ch], mean_dbeta[ch], scale[ch]
                    at = e + ch
                    xf[at] = _bn_dx(g if index == 0 else zero, xf[at], md, mb, sc)
                    at = e + uf + ch
                    xf[at] = _bn_dx(g if index == 1 else zero, xf[at], md, mb, sc)
                    at = e + row + ch
                    xf[at] = _bn_dx(g if index == 2 else zero, xf[at], md, mb, sc)
                    at = e + row + uf + ch
                    xf[at] = _bn_dx(g if index == 3 else zero, xf[at], md, mb, sc)
            for xx in range(2 * wp, w):  # a column the floor dropped
                for dyy in range(2):
                    e = uint64(((b * h + 2 * py + dyy) * w + xx) * f)
                    for ch in range(uf):
                        xf[e + ch] = _bn_dx(zero, xf[e + ch], mean_dgamma[ch], mean_dbeta[ch], scale[ch])
        for yy in range(2 * hp, h):  # a row the floor dropped
            e = uint64((b * h + yy) * w * f)
            for r in range(uint64(w)):
                for ch in range(uf):
                    at = e + r * uf + ch
                    xf[at] = _bn_dx(zero, xf[at], mean_dgamma[ch], mean_dbeta[ch], scale[ch])
