"""Finiteness of weights known from bounds of their magnitude, without reading them after every update.

A check that no weight is NaN or infinite reads every matrix: for the rate
networks' 0.4-1.7 million weights some 0.1-1 ms, most of a ``partial_fit``
on one example. Instead, a bound ``M >= max |W|`` taken when ``W`` was last
read grows at each update by what that update can add, computed from the
much smaller factors of the update (``W += rate * h^T d`` adds at most
``rate * n * max|h| * max|d|`` per entry, ``n`` the inner dimension), with
the rounding of every operation included: in IEEE arithmetic each of ``k``
multiplications and additions forming an entry errs by at most a relative
``u = eps / 2``, so the entry's magnitude, and that of every partial result,
is at most the exact sum of the magnitudes times ``(1 + u)^k``, which
:func:`grown` over-approximates by ``(1 + (k + 2) eps) (1 + 1e-12)`` (the
float64 arithmetic of the bound itself errs by far less than the margin).
While a bound stays below half the dtype's largest number (:func:`limit`)
nothing can have overflowed, and with finite factors nothing is NaN, so the
matrix is finite without being read; a factor that is NaN or infinite, or a
bound that reaches the limit, makes the bound unknown (None) and the next
check reads the matrix (:func:`all_finite`). A test of finiteness, not of
values: no number the models compute depends on it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["limit", "amax", "grown", "all_finite", "refresh", "entries_finite", "every_entry_finite"]


def limit(dtype) -> float:
    """Bounds must stay below this (half the dtype's largest finite number)."""
    return 0.5 * float(np.finfo(dtype).max)


def amax(x) -> float:
    """``max |x|`` as a Python float (0 for an empty array); ``inf`` if any entry is NaN or infinite."""
    if x.size == 0:
        return 0.0
    m = float(np.max(np.abs(x)))
    return m if math.isfinite(m) else math.inf


def grown(terms, ops, dtype):
    """A bound of ``|result|`` from ``terms`` (bounds of the magnitudes the result sums, in exact
    arithmetic) when each entry is formed by at most ``ops`` roundings in ``dtype``; None if a term
    is unknown (None) or the bound is not below :func:`limit` (NaN fails that test too)."""
    total = 0.0
    for t in terms:
        if t is None:
            return None
        total += t
    new = total * (1.0 + (ops + 2) * float(np.finfo(dtype).eps)) * (1.0 + 1e-12)
    return new if new < limit(dtype) else None


def all_finite(arrays, bounds):
    """True if every array is free of NaN and inf; ``bounds[i]`` (a list, updated in place) is a
    known bound of ``max |arrays[i]|`` (skips reading it) or None (reads it, and records its
    magnitude as the bound if it is finite and below :func:`limit`)."""
    for i, x in enumerate(arrays):
        if bounds[i] is not None:
            continue
        if x.size == 0:
            bounds[i] = 0.0
            continue
        hi, lo = float(x.max()), float(x.min())  # NaN if any entry is NaN
        if not (math.isfinite(hi) and math.isfinite(lo)):
            return False
        m = max(hi, -lo)
        bounds[i] = m if m < limit(x.dtype) else None
    return True


def refresh(arrays, bounds):
    """Read the arrays whose bound is unknown and record their magnitude where it is finite and
    below :func:`limit` (for arrays whose finiteness is not itself tested, such as velocities)."""
    for i, x in enumerate(arrays):
        if bounds[i] is None:
            m = amax(x)
            bounds[i] = m if m < limit(x.dtype) else None


# The sums below add only zeros and NaNs, whose total is the same in any order, so they may be
# reassociated (and so vectorised); without "nnan" or "ninf", x * 0 is not folded to 0.
_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})


@njit(**_JIT)
def entries_finite(x):
    """True if no entry of the 1-D array ``x`` is NaN or infinite (pass ``a.reshape(-1)``): one
    compiled, vectorised pass, without the temporary of ``np.isfinite(x).all()``."""
    if x.shape[0] == 0:
        return True
    zero = x[0] - x[0]  # 0 in x's dtype (NaN if x[0] is not finite, and then so is the sum)
    acc = zero
    for i in range(x.shape[0]):
        acc += x[i] * zero  # 0 for a finite entry, NaN for NaN or +-inf
    return acc == zero


@njit(**_JIT)
def _tuple_finite(arrays):
    """:func:`entries_finite` of every 1-D array of a tuple of one array type, in one call."""
    for x in arrays:
        if not entries_finite(x):
            return False
    return True


def every_entry_finite(arrays):
    """True if no entry of any array (of any shape; None entries skipped) is NaN or infinite: one
    compiled call per kind of array (dtype, writeable, contiguous) rather than one per array
    (a dozen calls cost some 40 microseconds of a one-image CNN step)."""
    kinds: dict = {}
    for x in arrays:
        if x is not None:
            flat = x.reshape(-1)
            kinds.setdefault((flat.dtype, flat.flags.writeable, flat.flags.c_contiguous), []).append(flat)
    return all(_tuple_finite(tuple(group)) for group in kinds.values())
