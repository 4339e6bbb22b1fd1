"""Normal numbers of the simulator's random streams, compiled (numba).

Only :class:`~.simulator.RandomStreams` calls this module. Noisy symmetric
feedback adds fresh N(0, 0.05) noise to every feedback matrix after every
update (Guerguiev, Lillicrap & Richards 2017, Methods, "noisy symmetric
weights"): under broadcast a weight-sized matrix per hidden layer and example,
which NumPy's generator made the largest cost of those points. Here normal
number ``i`` is the standard-normal quantile of uniform ``i`` of a SplitMix64
stream (the spike generator of :mod:`._kernel`, numbers ``NORMAL_OFFSET + i``
of the spike key, so the two never share a number), by Acklam's rational
approximation of the inverse normal CDF (P. J. Acklam, "An algorithm for
computing the inverse normal cumulative distribution function", 2003):

* central region ``p_low <= u <= 1 - p_low`` (``p_low = 0.02425``, 95% of
  draws), with ``q = u - 1/2``, ``r = q^2``:
  ``x = q (((((a1 r + a2) r + a3) r + a4) r + a5) r + a6) /
  (((((b1 r + b2) r + b3) r + b4) r + b5) r + 1)``;
* tails, with ``t = sqrt(-2 ln(min(u, 1 - u)))``:
  ``x = ±(((((c1 t + c2) t + c3) t + c4) t + c5) t + c6) / ((((d1 t + d2) t + d3) t + d4) t + 1)``
  (negative for ``u < 1/2``).

Relative error below 1.15e-9 (Acklam), far below the float32 the simulator
stores. The central formula is a loop without branches (vectorised); its
value exceeds 1.9729 in magnitude wherever ``u`` lies in a tail, so a second
pass looks at the uniform again only where ``|x| > 1.97`` (indices gathered
first, chunk by chunk: a loop over every number, branching to the tail
formula, is if-converted by the compiler, which then takes a logarithm of
every number, four times the cost of the rest). Uniforms carry 53
random bits and are centred in their interval (``(k + 1/2) 2^-53``), so
neither 0 nor 1 occurs.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from bioplaus.models.segdend._kernel import _splitmix, _top53

#: Normal number ``i`` uses SplitMix64 output ``NORMAL_OFFSET + i`` of the spike key (spike
#: uniforms use outputs from 0 up, far below).
NORMAL_OFFSET = 2**63

# Acklam (2003), coefficients of the central (a, b) and tail (c, d) rational functions
_A1, _A2, _A3, _A4, _A5, _A6 = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                                1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
_B1, _B2, _B3, _B4, _B5 = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                           6.680131188771972e+01, -1.328068155288572e+01)
_C1, _C2, _C3, _C4, _C5, _C6 = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00)
_D1, _D2, _D3, _D4 = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                      3.754408661907416e+00)
_P_LOW = 0.02425
#: Below this magnitude the central formula's value is certainly from the central region.
_CENTRAL_BOUND = 1.97
#: Numbers per pass of :func:`fill_normal` (the tail indices of one pass are gathered first).
_TAIL_CHUNK = 4096


@njit(inline="always")
def _uniform53(key, i):
    """``(k + 1/2) 2^-53`` for the top 53 bits ``k`` of SplitMix64 output ``NORMAL_OFFSET + i``
    (``k 2^-53`` exactly, plus ``2^-54``: one rounding, that of ``(k + 1/2) 2^-53``)."""
    z = _splitmix(key, np.uint64(NORMAL_OFFSET) + np.uint64(i))
    return _top53(z) + 5.551115123125783e-17


@njit(inline="always")
def _central(u):
    """Acklam's central formula at ``u`` (exact to 1.15e-9 for ``p_low <= u <= 1 - p_low``)."""
    q = u - 0.5
    r = q * q
    return (q * (((((_A1 * r + _A2) * r + _A3) * r + _A4) * r + _A5) * r + _A6)
            / (((((_B1 * r + _B2) * r + _B3) * r + _B4) * r + _B5) * r + 1.0))


@njit(inline="always")
def _quantile_fixed(u, x):
    """The quantile of ``u``, given the central formula's value ``x`` at it (replaced in the tails)."""
    if u < _P_LOW or u > 1.0 - _P_LOW:
        t = math.sqrt(-2.0 * math.log(u if u < 0.5 else 1.0 - u))
        y = ((((((_C1 * t + _C2) * t + _C3) * t + _C4) * t + _C5) * t + _C6)
             / ((((_D1 * t + _D2) * t + _D3) * t + _D4) * t + 1.0))
        return y if u < 0.5 else -y
    return x


@njit(cache=True, nogil=True, error_model="numpy")
def normal_quantile(u, out):
    """``out[j]`` = the standard-normal quantile of ``u[j]`` in (0, 1) (1-D arrays), as :func:`fill_normal`
    computes it."""
    for j in range(u.size):
        out[j] = _quantile_fixed(u[j], _central(u[j]))


@njit(inline="always")
def _central_pass(key, start, scale, out):
    """``out[j]`` = the central formula's value at uniform ``start + j``, times ``scale`` (a loop of
    its own over a view: vectorised, where the same loop nested in the chunk loop is not)."""
    for j in range(out.size):
        out[j] = _central(_uniform53(key, start + j)) * scale


@njit(inline="always")
def _gather_tails(out, bound, tail):
    """Indices of the entries of ``out`` above ``bound`` in magnitude into ``tail``; their number."""
    k = 0
    for j in range(out.size):  # without branches
        tail[k] = j
        k += abs(out[j]) > bound
    return k


@njit(cache=True, nogil=True, error_model="numpy")
def fill_normal(key, start, scale, out):
    """``out[j] = scale * z_(start + j)`` (1-D ``out``, float32 or float64): normal numbers
    ``start ..`` of the stream ``key``, see the module docstring."""
    n = out.size
    bound = out.dtype.type(_CENTRAL_BOUND * abs(scale))
    tail = np.empty(_TAIL_CHUNK, np.int64)
    tu, tv = np.empty(_TAIL_CHUNK), np.empty(_TAIL_CHUNK)
    for j0 in range(0, n, _TAIL_CHUNK):
        j1 = min(n, j0 + _TAIL_CHUNK)
        _central_pass(key, start + j0, scale, out[j0:j1])
        k = _gather_tails(out[j0:j1], bound, tail)  # the possible tails (about 5%), chunk-relative
        for q in range(k):
            tail[q] += j0
        # only those (a loop over all numbers would be if-converted and vectorised, taking the
        # logarithm of every one), stage by stage: the logarithms are independent calls, the
        # rest vectorised; _quantile_fixed's operations on each
        for q in range(k):
            u = _uniform53(key, start + tail[q])
            tu[q] = u
            tv[q] = u if u < 0.5 else 1.0 - u
        for q in range(k):
            tv[q] = math.log(tv[q])
        for q in range(k):
            u = tu[q]
            t = math.sqrt(-2.0 * tv[q])
            y = ((((((_C1 * t + _C2) * t + _C3) * t + _C4) * t + _C5) * t + _C6)
                 / ((((_D1 * t + _D2) * t + _D3) * t + _D4) * t + 1.0))
            y = y if u < 0.5 else -y
            tv[q] = (y if (u < _P_LOW or u > 1.0 - _P_LOW) else _central(u)) * scale
        for q in range(k):
            out[tail[q]] = tv[q]
