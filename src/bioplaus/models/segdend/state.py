"""Weights and simulation state of a segregated-dendrite network (arrays only).

:class:`Weights` holds the feedforward, feedback and bias arrays (with the
pending low-rank online updates); :class:`State` holds the per-example
compartment potentials, the rates and spike histories of every source and
the PSP traces of every pathway; :func:`slice_state` / :func:`write_back`
run a smaller batch on the first rows of a state. Layout: ``B`` examples
side by side as rows; ``WT[l]`` is ``W_l`` transposed, ``(n_{l-1}, n_l)``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import blas as _blas

from bioplaus.models import _finite
from bioplaus.models.segdend import _kernel
from bioplaus.models.segdend.config import (
    INIT_B_AVG, INIT_B_SD, NOISY_SYMMETRIC_SD, SPARSE_FRACTION, SPARSE_GAIN, Config,
)



def weight_optimization_stats(N, lambda_max):
    """Mean and standard deviation of initial weights for ``N`` inputs (``W_avg``, ``W_sd``).

    Chosen so that dendritic potentials start near mean 3, s.d. 3 with a bias
    of 0.8, assuming the sigmoid's linear slope ``nu = lambda_max / 4``.
    """
    V_avg, V_sd, b_avg = 3.0, 3.0, INIT_B_AVG
    nu = lambda_max * 0.25
    V_sm = V_sd**2 + V_avg**2
    W_avg = (V_avg - b_avg) / (nu * N * V_avg)
    W_sm = (
        V_sm + nu**2 * (N - N**2) * W_avg**2 * V_avg**2 - 2 * N * nu * b_avg * V_avg * W_avg - b_avg**2
    ) / (N * nu**2 * V_sm)
    return W_avg, math.sqrt(max(W_sm - W_avg**2, 0.0))



#: Online (batch 1) updates of large feedforward matrices are kept as a pending
#: low-rank sum and applied every DEFER_RANK examples by one matrix product.
DEFER_RANK = 32
DEFER_MIN_SIZE = 65536


class _Pending:
    """Pending rank-m update ``WT += P[:m].T @ Q[:m]`` of one feedforward matrix (m kept by Weights)."""

    def __init__(self, n_in, n_out, dtype):
        self.P = np.zeros((DEFER_RANK, n_in), dtype)
        self.Q = np.zeros((DEFER_RANK, n_out), dtype)


class Weights:
    """Weights of one network: ``WT``, ``b`` per layer; ``YT``, ``c``, sparse masks per hidden layer.

    ``WT[l]`` may carry a pending low-rank update (``pending[l]``, of rank
    ``pending_m[l]``); readers other than the simulator's rate-mode drive
    read through :meth:`applied` (which leaves the queue as it is) or call :meth:`flush` first. Arrays are updated in place, except ``YT``
    under symmetric feedback (replaced: :meth:`impose_symmetry`).

    Finiteness (:meth:`all_finite`) of a matrix with pending updates is known
    without reading it again while it changes only by :meth:`flush`: a bound
    of its largest magnitude, taken when it was last read, grows with each
    flushed update by what that update can add (rounding included), and
    while the bound stays below half the dtype's largest number nothing can
    have overflowed. Every other writer of ``WT`` calls :meth:`touched` first.
    """

    def __init__(self, WT, b, YT, c, masks):
        self.WT, self.b, self.YT, self.c, self.masks = WT, b, YT, c, masks
        self.pending = [None] * len(WT)
        self.pending_m = np.zeros(len(WT), np.int64)
        self._kernel_arrays = None
        self._bounds = [None] * len(WT)  # per layer: >= max |WT[l]|, all finite; None = unknown
        self._growth = [(0, 0.0)] * len(WT)  # per layer: (terms read, their sum), see _queue_growth

    def touched(self, layers=None):
        """``WT`` of ``layers`` (all if None) is about to change other than by :meth:`flush`:
        forget its magnitude bound (the next :meth:`all_finite` reads it)."""
        for l in range(len(self.WT)) if layers is None else layers:
            self._bounds[l] = None

    def kernel_arrays(self):
        """Tuples of this network's arrays for the compiled loop (see ``_kernel``)."""
        if self._kernel_arrays is None:
            dt = self.WT[0].dtype
            d2, d1 = np.zeros((1, 1), dt), np.zeros(0, dt)
            L = len(self.WT)
            self._kernel_arrays = (
                padded(self.WT, L, d2), padded(self.b, L, d1), padded(self.YT, L, d2, -1),
                padded([d1 if x is None else x for x in self.c], L, d1, -1),
                padded([d2 if p is None else p.P for p in self.pending], L, d2),
                padded([d2 if p is None else p.Q for p in self.pending], L, d2), self.pending_m)
        return self._kernel_arrays

    def ensure_pending(self, layers):
        """Allocate the pending low-rank buffers of ``layers`` (indices); True if any was new."""
        new = False
        for l in layers:
            if self.pending[l] is None:
                self.pending[l] = _Pending(*self.WT[l].shape, self.WT[l].dtype)
                self._kernel_arrays, new = None, True
        return new

    def flush(self, layer=None):
        """Apply pending updates (of one layer, or all)."""
        for l in range(len(self.WT)) if layer is None else (layer,):
            m = self.pending_m[l]
            if m:
                pend = self.pending[l]
                P, Q = pend.P[:m], pend.Q[:m]
                if self._bounds[l] is not None:
                    self._bounds[l] = _grown_bound(self._bounds[l], self._queue_growth(l), m, self.WT[l].dtype)
                rank_update(self.WT[l], P, Q, 1.0)
                self.pending_m[l] = 0
                self.__dict__.setdefault("_growth", [(0, 0.0)] * len(self.WT))[l] = (0, 0.0)

    @classmethod
    def initial(cls, cfg: Config, rng: np.random.Generator, dtype=np.float32):
        """Initial weights (plain or weight-optimised), feedback, sparse masks, symmetry."""
        sizes, L = cfg.sizes, cfg.n_layers
        WT, b = [None] * L, [None] * L

        def uniform(shape):  # U(-1, 1) as the specification and the reference draw it (-1 + 2 u)
            return -1.0 + 2.0 * rng.random(shape)

        for l in range(L):
            N, n = sizes[l], sizes[l + 1]
            if cfg.use_weight_optimization:
                W_avg, W_sd = weight_optimization_stats(N, cfg.lambda_max)
                W = W_avg + 3.465 * W_sd * uniform((n, N))
                b[l] = INIT_B_AVG + 3.465 * INIT_B_SD * uniform(n)
            else:
                W = 0.1 * uniform((n, N))
                b[l] = 1.0 * uniform(n)
            WT[l] = np.ascontiguousarray(W.T)
        YT, c, masks = [None] * (L - 1), [None] * (L - 1), [None] * (L - 1)
        for l in range(L - 1):
            n, n_src = sizes[l + 1], sizes[cfg.feedback_source(l) + 1]
            if cfg.use_weight_optimization:
                Y_avg, Y_sd = weight_optimization_stats(n, cfg.lambda_max)
                Y = Y_avg + 3.465 * Y_sd * uniform((n, n_src))
                c[l] = INIT_B_AVG + 3.465 * INIT_B_SD * uniform(n)  # feedback biases as feedforward ones
            else:
                Y = uniform((n, n_src))
                c[l] = uniform(n)
            YT[l] = np.ascontiguousarray(Y.T)
        for l in range(L - 1):  # masks drawn after all weights (the reference's order)
            if cfg.use_sparse_feedback:
                mask = np.ones(YT[l].size)
                mask[rng.choice(YT[l].size, int(SPARSE_FRACTION * YT[l].size), replace=False)] = 0.0
                masks[l] = mask.reshape(YT[l].shape)
                YT[l] *= masks[l] * SPARSE_GAIN
        if not cfg.use_feedback_bias:
            c = [None] * (L - 1)
        w = cls([x.astype(dtype) for x in WT], [x.astype(dtype) for x in b],
                [x.astype(dtype) for x in YT], [None if x is None else x.astype(dtype) for x in c],
                [None if m is None else m.astype(dtype) for m in masks])
        if cfg.use_symmetric_weights:
            w.impose_symmetry(cfg, None if not cfg.noisy_symmetric_weights else
                              (lambda shape: rng.normal(0.0, NOISY_SYMMETRIC_SD, size=shape)))
        return w

    def impose_symmetry(self, cfg: Config, noise=None):
        """Feedback = transposes of feedforward weights (products of them under broadcast).

        ``noise(shape)`` (optional) returns N(0, 0.05) noise added to each
        transpose: a matrix under broadcast, one number per layer without
        (the reference code's choice; the specification is silent). Sparse
        masks are applied afterwards (survivors times 5); the products are
        formed from the unmasked matrices. A ``noise`` with an ``added_to(M)``
        method (``M + noise(M.shape)`` in ``M``'s dtype, formed without a
        float64 temporary) gives the matrices that way: the same numbers.
        """
        L = cfg.n_layers
        unmasked = [None] * (L - 1)
        added_to = getattr(noise, "added_to", None) if cfg.use_broadcast else None
        for l in range(L - 2, -1, -1):
            Wt_above = self.WT[l + 1].T  # W_{l+1} (n_{l+1}, n_l) == Y_l^T for the layer above
            if added_to is not None:  # (W_{l+1}^T + N)^T with N's numbers in C order of WT[l + 1]
                Wt_above = added_to(self.WT[l + 1]).T
            elif noise is not None:
                shape = Wt_above.shape[::-1] if cfg.use_broadcast else ()
                Wt_above = Wt_above + noise(shape).T.astype(Wt_above.dtype)
            if cfg.use_broadcast and l < L - 2:
                # Y_l = W_{l+1}^T @ Y_{l+1}  ->  YT_l = YT_{l+1} @ W_{l+1}
                unmasked[l] = unmasked[l + 1] @ Wt_above
            else:
                unmasked[l] = np.array(Wt_above, order="C")
        for l in range(L - 1):
            Y = unmasked[l]
            if self.masks[l] is not None:
                Y = Y * self._gained_mask(l)
            self.YT[l] = np.ascontiguousarray(Y, dtype=self.WT[0].dtype)
        self._kernel_arrays = None

    def _gained_mask(self, l):
        """``masks[l] * SPARSE_GAIN`` (the same array while ``masks[l]`` is the same object)."""
        cache = self.__dict__.setdefault("_mask_cache", {})
        hit = cache.get(l)
        if hit is None or hit[0] is not self.masks[l]:
            hit = cache[l] = (self.masks[l], self.masks[l] * SPARSE_GAIN)
        return hit[1]

    def copy(self):
        self.flush()
        cp = lambda xs: [None if x is None else x.copy() for x in xs]  # noqa: E731
        return Weights(cp(self.WT), cp(self.b), cp(self.YT), cp(self.c), cp(self.masks))

    def all_finite(self):
        """True if no weight or bias is NaN or infinite, pending updates included (they stay pending:
        when a queue is applied decides how its terms are grouped, hence the rounding, so a check
        must not apply it). A queued matrix is known finite from its bound (class docstring) grown
        by the queue; only when that bound says nothing is the matrix with its queue formed apart
        and read."""
        for l, x in enumerate(self.WT):
            if self._bounds[l] is None:
                if self.pending[l] is None:
                    if not np.isfinite(x).all():
                        return False
                    continue
                hi, lo = float(x.max()), float(x.min())  # NaN if any is NaN
                if not (math.isfinite(hi) and math.isfinite(lo)):
                    return False
                bound = max(hi, -lo)
                self._bounds[l] = bound if bound < _finite.limit(x.dtype) else None
            m = int(self.pending_m[l])
            if m:
                if (self._bounds[l] is None
                        or _grown_bound(self._bounds[l], self._queue_growth(l), m, x.dtype) is None):
                    with np.errstate(all="ignore"):
                        if not np.isfinite(self._applied_matrix(l)).all():
                            return False
        return _finite.every_entry_finite((*self.b, *self.YT, *self.c))

    def _queue_growth(self, l):
        """``sum_k max|P_k| max|Q_k|`` over the ``pending_m[l]`` queued terms (float64): what they can
        add to an entry's magnitude (:func:`_grown_bound`). Kept as a running sum, each term's maxima
        read once (a term is written once, before ``pending_m`` counts it; :meth:`flush` restarts it)."""
        growth = self.__dict__.setdefault("_growth", [(0, 0.0)] * len(self.WT))
        seen, total = growth[l]
        m = int(self.pending_m[l])
        if seen > m:  # the count was set back other than by flush: read the queue again
            seen, total = 0, 0.0
        if m > seen:
            total += _kernel.queue_growth(self.pending[l].P, self.pending[l].Q, seen, m)
            growth[l] = (m, total)
        return total

    def _applied_matrix(self, l):
        """``WT[l]`` with its pending update applied, as a new array (``WT[l]`` itself if none):
        the numbers :meth:`flush` would now give."""
        m = int(self.pending_m[l])
        if not m:
            return self.WT[l]
        out = self.WT[l].copy()
        rank_update(out, self.pending[l].P[:m], self.pending[l].Q[:m], 1.0)
        return out

    def applied(self):
        """These weights as trained so far, for readers (testing), leaving this object as it is.

        Itself when nothing is pending; else new :class:`Weights` sharing every array except the
        queued matrices, which are copies with their queues applied (:meth:`flush`'s numbers). A
        reader that flushed would decide where the queue is cut, and so the rounding of the
        training that follows: reading through this view leaves training exactly as without it.
        """
        if not self.pending_m.any():
            return self
        return Weights([self._applied_matrix(l) for l in range(len(self.WT))], self.b, self.YT, self.c,
                       self.masks)


def _grown_bound(bound, growth, m, dtype):
    """A bound of ``max |W + P^T Q|`` as BLAS computes it in ``dtype`` (``P`` (m, n), ``Q`` (m, k)),
    given ``bound >= max |W|`` and ``growth = sum_k max|q_k| max|p_k|`` (:meth:`Weights._queue_growth`);
    None when it is not below :func:`~bioplaus.models._finite.limit` (or not finite).

    Each entry is ``w + sum_k q_k p_k`` formed by m + 1 multiplications and additions (BLAS
    may fuse them), so its magnitude, and that of every partial sum, is at most
    ``(|w| + sum_k |q_k| |p_k|) (1 + u)^(m+1)`` with ``u = eps / 2`` the unit round-off, and
    ``sum_k |q_k| |p_k| <= growth``. The float64 arithmetic here (``growth`` included) errs by far
    less than the 1e-12 added; below the limit nothing can overflow, so ``W`` stays finite.
    """
    eps = float(np.finfo(dtype).eps)
    new = (bound + growth) * (1.0 + (m + 2) * eps) * (1.0 + 1e-12)
    return new if new < _finite.limit(dtype) else None  # NaN fails the test too


def padded(xs, n_layers, dummy, extra=0):
    """``xs`` as a tuple padded with ``dummy`` to :func:`padded_layers` ``+ extra`` entries
    (``extra`` = -1 for hidden-layer tuples, +1 for source tuples)."""
    xs = tuple(xs)
    return xs + (dummy,) * (padded_layers(n_layers) + extra - len(xs))


def padded_layers(n_layers):
    """Layers of the compiled loop's tuples for a network of ``n_layers``: 2, 4 or 7 (or more).

    A tuple's length is part of its compiled type: padding to a few sizes
    bounds the number of compiled versions (each takes some 20 CPU seconds
    once per machine), while small networks keep short tuples, which are
    cheaper to pass (about 0.1 microsecond per array per call).
    """
    for size in (2, 4, _kernel.PAD_LAYERS):
        if n_layers <= size:
            return size
    return n_layers


def rank_update(M, a, bvec, alpha):
    """In place ``M += alpha * a.T @ bvec`` for C-contiguous ``M`` (n, m), ``a`` (B, n), ``bvec`` (B, m).

    BLAS ger/gemm on the transposed (Fortran) view: no temporary of M's size.
    """
    dt = M.dtype
    if dt == np.float32:
        ger, gemm = _blas.sger, _blas.sgemm
    elif dt == np.float64:
        ger, gemm = _blas.dger, _blas.dgemm
    else:  # pragma: no cover - dtypes restricted by the estimator
        M += alpha * (a.T @ bvec)
        return
    a = np.asarray(a, dtype=dt)
    bvec = np.asarray(bvec, dtype=dt)
    if a.shape[0] == 1:
        out = ger(alpha, bvec[0], a[0], a=M.T, overwrite_a=1)
    else:
        out = gemm(alpha, bvec, a, beta=1.0, c=M.T, trans_a=1, overwrite_c=1)
    if not np.shares_memory(out, M):  # pragma: no cover - BLAS copied (non-contiguous M)
        M[...] = out.T


# ---------------------------------------------------------------- simulation


class _ArrayItem:
    """An int attribute kept in a shared int64 array (read by the compiled loop):
    element ``obj._index`` of the array ``getattr(obj, name)``."""

    def __init__(self, name):
        self.name = name

    def __get__(self, obj, owner=None):
        return self if obj is None else int(getattr(obj, self.name)[obj._index])

    def __set__(self, obj, value):
        getattr(obj, self.name)[obj._index] = value


class _Source:
    """Activity of one layer (index -1 = input): rates, version, spike ring buffer.

    ``version`` counts rate changes; it lives in the state's ``versions``
    array (read by the compiled loop).
    """

    def __init__(self, B, n, mem, spiking, dtype, versions, index):
        self.rates = np.zeros((B, n), dtype)
        self.hist = np.zeros((mem, B, n), dtype) if spiking else None
        self._versions, self._index = versions, index

    version = _ArrayItem("_versions")


#: In :meth:`State.reproject`'s ``changes``: a matrix changed other than by low-rank terms.
CHANGED = "changed"


class _Pathway:
    """Dendritic drive ``PSP @ M`` of one compartment (``M`` = ``WT[l]`` or ``YT[l]``).

    A feedforward source spikes earlier in the same step than the layer reads
    its drive; a feedback source later, so a feedback PSP ends one step back
    (the order of the compiled loop gives both).
    """

    def __init__(self, source, spiking, B, n_out, mem, dtype, seen, index):
        self.source, self.spiking = source, spiking
        self._seen, self._index = seen, index  # source version the drive was computed from
        self.drive = np.zeros((B, n_out), dtype)
        self.proj = np.zeros((mem, B, n_out), dtype) if spiking else None  # ring of S(t) @ M
        # PSP traces sum_a d^(a+1) proj(t - a) for d = exp(-1/tau_L), exp(-1/tau_s)
        self.trace = np.zeros((2, B, n_out), dtype) if spiking else None

    seen = _ArrayItem("_seen")

    def reproject(self, M, trace_weights):
        """Recompute all projections after ``M`` changed (spike by spike: spikes are sparse),
        and the traces from them (``trace_weights`` (2, mem): weight of each ring slot)."""
        mem, B, n = self.source.hist.shape
        _kernel.project(self.source.hist.reshape(mem * B, n), M, self.proj.reshape(mem * B, -1))
        self.retrace(trace_weights)

    def correct(self, terms, trace_weights):
        """Follow low-rank changes ``M += alpha a^T q`` of ``M`` (``terms``: ``(a, q, alpha)``
        with ``a`` (r, n_src), ``q`` (r, n_out)) without projecting the ring again.

        The projection of ring slot ``k`` is ``S_k @ M``, so the change adds
        ``alpha (S_k @ a^T) @ q`` to it: a product of the spike ring with ``a``
        (``mem B r n_src`` multiply-adds) and a rank-``r`` update of the ring
        (``mem B r n_out``), instead of projecting every spike again
        (``mem B n_src n_out`` times the share of sources that spiked). The
        traces are formed from the corrected ring (``trace_weights`` as in
        :meth:`reproject`). The same numbers as :meth:`reproject` up to
        rounding (a few units in the last place of the projections).
        """
        mem, B, n = self.source.hist.shape
        spikes = self.source.hist.reshape(mem * B, n)
        proj = self.proj.reshape(mem * B, -1)
        for a, q, alpha in terms:
            coef = np.ascontiguousarray((spikes @ a.T).T)  # (r, mem B)
            rank_update(proj, coef, q, alpha)
        self.retrace(trace_weights)

    def retrace(self, trace_weights):
        """Form the traces again from the ring's projections (``trace_weights`` as in :meth:`reproject`).

        Between updates the time-step loop carries a trace forward by its
        recursion (decay, add the newest slot, drop the oldest), whose rounding
        residue would otherwise decay into subnormal numbers where the source
        falls silent (slow to compute on x86: a draw with silent feedback
        sources ran 2x slower); forming it from the ring is what a full
        projection does, so a matrix that did not move gives the same numbers
        as projecting it again, at ``2 mem B n_out`` multiply-adds.
        """
        mem = self.source.hist.shape[0]
        np.matmul(trace_weights, self.proj.reshape(mem, -1), out=self.trace.reshape(2, -1))


class State:
    """Dynamic state of ``B`` side-by-side simulations: somatic potentials, rates, spike history."""

    def __init__(self, cfg: Config, B: int, dtype, apical: bool = True):
        """``apical=False`` (testing without apical conductance): apical
        compartments are not simulated (they cannot affect the output)."""
        self.B, self.dtype, self.apical = B, np.dtype(dtype), apical
        self.mem = cfg.mem
        L, mem = cfg.n_layers, cfg.mem
        sizes = cfg.sizes
        spiking_src = [cfg.use_spiking_feedforward] + [False] * L
        if cfg.use_spiking_feedforward:
            for l in range(L - 1):
                spiking_src[l + 1] = True
        if cfg.use_spiking_feedback and apical:
            for l in range(L - 1):
                spiking_src[cfg.feedback_source(l) + 1] = True
        self.spiking_src = spiking_src  # index 0 = input, l + 1 = layer l
        self.versions = np.zeros(L + 1, np.int64)
        self.ff_seen = np.full(L, -1, np.int64)
        self.fb_seen = np.full(max(1, L - 1), -1, np.int64)
        self.sources = [_Source(B, sizes[i], mem, spiking_src[i], dtype, self.versions, i) for i in range(L + 1)]
        self.C = [np.zeros((B, sizes[l + 1]), dtype) for l in range(L)]
        self.A = [np.zeros((B, sizes[l + 1]), dtype) for l in range(L - 1)]
        self.ff = [_Pathway(self.sources[l], cfg.use_spiking_feedforward, B, sizes[l + 1], mem, dtype,
                            self.ff_seen, l) for l in range(L)]
        self.fb = [_Pathway(self.sources[cfg.feedback_source(l) + 1], cfg.use_spiking_feedback and apical, B,
                            sizes[l + 1], mem, dtype, self.fb_seen, l) for l in range(L - 1)]
        self.step = 0  # global step counter; slot of step g is g % mem
        self._spiking_paths = ([(l, p) for l, p in enumerate(self.ff) if p.spiking],
                               [(l, p) for l, p in enumerate(self.fb) if p.spiking])
        # the input's exp(-rate), valid while the input is fixed (spiking feedforward)
        self.p0 = np.zeros((B, sizes[0]), dtype)
        self.p0_valid = False
        self.phase_cache = {}  # arguments and window sums of the compiled loop, per phase kind
        self.errors = None  # local error buffers of train_batch
        self.target = np.zeros((B, sizes[-1]), dtype)  # teaching signal of the target phase
        # per-neuron apical windows (random plateau times), hidden layers
        self.plateau_end = [np.zeros((B, sizes[l + 1]), np.int64) for l in range(L - 1)]
        self.plateau_start = [np.zeros((B, sizes[l + 1]), np.int64) for l in range(L - 1)]
        # spike uniforms per step: offset of each spiking source within a step, count
        self.u_off = np.zeros(L + 1, np.int64)
        self.u_per_step = 0
        for i, on in enumerate(spiking_src):
            if on:
                self.u_off[i] = self.u_per_step
                self.u_per_step += B * sizes[i]
        d2, d3 = np.zeros((1, 1), dtype), np.zeros((1, 1, 1), dtype)
        # the state's arrays in the order of the compiled loop's arguments
        self.kernel_arrays = (
            padded([src.rates for src in self.sources], L, d2, 1), self.versions,
            padded([d3 if src.hist is None else src.hist for src in self.sources], L, d3, 1), self.p0,
            padded(self.C, L, d2), padded(self.A, L, d2, -1), padded([p.drive for p in self.ff], L, d2),
            padded([d3 if p.proj is None else p.proj for p in self.ff], L, d3),
            padded([d3 if p.trace is None else p.trace for p in self.ff], L, d3), self.ff_seen,
            padded([d3 if q.proj is None else q.proj for q in self.fb], L, d3, -1),
            padded([d3 if q.trace is None else q.trace for q in self.fb], L, d3, -1), self.fb_seen)
        self._taus = (cfg.tau_L, cfg.tau_s)
        self._decays = np.exp(-1.0 / np.array(self._taus))
        self._spiking_sizes = np.array([sizes[i] if on else 0 for i, on in enumerate(spiking_src)], np.int64)

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "_spiking_paths" not in state:  # pickled by an earlier version: derived attributes
            self._spiking_paths = ([(l, p) for l, p in enumerate(self.ff) if p.spiking],
                                   [(l, p) for l, p in enumerate(self.fb) if p.spiking])
            self._taus = None

    def retime(self, cfg: Config, weights: Weights):
        """Follow a change of the PSP time constants (``tau_L``, ``tau_s``, by ``set_params``
        between calls): the traces are formed again from the ring of projections with the new
        decays, as the compiled loop advances them from now on (nothing to do if unchanged)."""
        if self._taus is None:  # a state pickled before time constants were followed
            self._taus = (cfg.tau_L, cfg.tau_s)
        if (cfg.tau_L, cfg.tau_s) != self._taus:
            self._taus = (cfg.tau_L, cfg.tau_s)
            self._decays = np.exp(-1.0 / np.array(self._taus))
            self.reproject(weights)

    def clear(self):
        """Back to what a new ``State`` of the same arguments holds (every potential, rate, spike,
        projection, trace, window and counter as at construction); only the compiled loop's
        argument cache (``phase_cache``) is kept, whose window sums each phase empties at its
        start. Cheaper than building a state for a call on a few rows (testing)."""
        for src in self.sources:
            src.rates.fill(0)
            if src.hist is not None:
                src.hist.fill(0)
        for p in (*self.ff, *self.fb):
            p.drive.fill(0)
            if p.proj is not None:
                p.proj.fill(0)
                p.trace.fill(0)
        for x in (*self.C, *self.A, *self.plateau_end, *self.plateau_start):
            x.fill(0)
        self.versions.fill(0)
        self.ff_seen.fill(-1)
        self.fb_seen.fill(-1)
        self.step = 0
        self.p0.fill(0)
        self.p0_valid = False
        self.errors = None
        self.target.fill(0)

    def use_spike_layout(self, total_rows, first_row):
        """Draw spike uniforms as rows ``first_row .. first_row + B - 1`` of a state of ``total_rows`` rows.

        A step's uniforms are laid out source by source, row by row
        (:func:`._kernel.phase_steps`); with this layout the rows of this state
        read exactly the numbers those rows of the larger state would, so a
        batch can be simulated in groups of rows with the same spikes.
        """
        if first_row < 0 or first_row + self.B > total_rows:
            raise ValueError(f"rows {first_row}..{first_row + self.B - 1} are not within {total_rows} rows")
        sizes = self._spiking_sizes
        self.u_off[:] = total_rows * (np.cumsum(sizes) - sizes) + first_row * sizes
        self.u_per_step = int(total_rows * sizes.sum())

    @property
    def projects_spikes(self):
        """True if a pathway of this state is driven by spikes (:meth:`reproject` then reads ``changes``)."""
        ff, fb = self._spiking_paths
        return bool(ff or fb)

    def nbytes(self):
        """Bytes of the state's arrays (potentials, rates, spike and projection rings, traces,
        counters, buffers; not the phase cache)."""
        arrays = [self.p0, self.target, self.versions, self.ff_seen, self.fb_seen, *self.C, *self.A,
                  *self.plateau_end, *self.plateau_start]
        for src in self.sources:
            arrays += [src.rates, src.hist]
        for p in self.ff + self.fb:
            arrays += [p.drive, p.proj, p.trace]
        return int(sum(a.nbytes for a in arrays if a is not None))

    def reproject(self, weights: Weights, changes=None):
        """Make every cached drive consistent with new weights.

        ``changes``: None (any matrix may have changed: every spiking pathway
        is projected again), or what changed since the last call, keyed
        ``("ff", l)`` (``WT[l]``) and ``("fb", l)`` (``YT[l]``): :data:`CHANGED`
        (anything), or a list of low-rank terms ``(a, q, alpha)``, each the
        update ``M += alpha a^T q`` (:meth:`_Pathway.correct`); a matrix
        absent from ``changes`` did not change (its ring stays as it is, its traces are formed again).
        """
        ff, fb = self._spiking_paths
        if ff:
            weights.flush()
        self.ff_seen.fill(-1)
        self.fb_seen.fill(-1)
        if ff or fb:
            age = (self.step - np.arange(self.mem)) % self.mem  # ring slot k holds the projection of step - age[k]
            trace_weights = (self._decays[:, None] ** (age + 1)).astype(self.dtype)
            for kind, paths, mats in (("ff", ff, weights.WT), ("fb", fb, weights.YT)):
                for l, p in paths:
                    change = CHANGED if changes is None else changes.get((kind, l))
                    if change is CHANGED:
                        p.reproject(mats[l], trace_weights)
                    elif change:
                        p.correct(change, trace_weights)
                    else:  # the ring is still right; its traces are formed again (_Pathway.retrace)
                        p.retrace(trace_weights)



def slice_state(st: State, nb, cfg, dtype, weights):
    """A state of ``nb`` examples holding copies of the first ``nb`` slots of ``st``."""
    part = State(cfg, nb, dtype)
    for a, b in zip(part.C, st.C):
        a[...] = b[:nb]
    for a, b in zip(part.A, st.A):
        a[...] = b[:nb]
    for a, b in zip(part.sources, st.sources):
        a.rates[...] = b.rates[:nb]
        if a.hist is not None:
            a.hist[...] = b.hist[:, :nb]
    part.step = st.step
    part.reproject(weights)
    return part


def write_back(st: State, part: State, nb):
    for a, b in zip(st.C, part.C):
        a[:nb] = b
    for a, b in zip(st.A, part.A):
        a[:nb] = b
    for a, b in zip(st.sources, part.sources):
        a.rates[:nb] = b.rates
        a.version += 1
        if a.hist is not None:
            a.hist[:, :nb] = b.hist
    # the untouched slots did not advance; keep them aligned to the shared step counter by
    # leaving their history as is (their next example continues from it)
    st.step = part.step
