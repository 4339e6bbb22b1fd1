"""Vectorised simulation core of the segregated-dendrite network.

NumPy arrays and one compiled step loop (:mod:`._segdend_kernel`, numba):
knows nothing of scikit-learn, optuna or files. The estimator in
:mod:`bioplaus.models.segdend` wraps it. Parameter names mirror the paper and
its reference code (``l_f_phase``, ``lambda_max``, ``g_B`` ...); the
equations are those of ``design/segregated-dendrites.md``.

Layout. ``B`` examples are simulated side by side as rows: every state array
is ``(B, n)``. Feedforward weights are stored transposed, ``WT[l]`` of shape
``(n_{l-1}, n_l)`` (so ``W_l = WT[l].T`` in the paper's orientation), feedback
weights likewise ``YT[l]`` of shape ``(n_src, n_l)`` (``Y_l = YT[l].T``).

Time. The time-step loop of a phase runs compiled, with no Python per step.
Work is skipped where it cannot change a result: in rate mode a dendritic
drive is recomputed only when its source rates changed (the input never
changes within an example), and once a whole step leaves every quantity
unchanged the rest of the phase is fast-forwarded (its window sums are added
in one go). In spike mode each step's spikes are projected once, ``S(t) @ W``
(only active sources: spikes are sparse), into a ring of the last ``mem``
projections, and the PSP-filtered drive is kept as two exponential traces
(the kernel is a difference of exponentials) that each new projection
enters and the projection ``mem`` steps old leaves; the mean PSP needed by
the learning rule is accumulated spike by spike with precomputed weights.
Online updates (batch 1) of large matrices are queued as a low-rank sum and
applied every ``DEFER_RANK`` examples by one matrix product.

Random streams are injectable (:class:`RandomStreams`); the order of draws is:
per training batch (1) phase lengths if random (forward, then target),
(2) plateau offsets if random (forward phase for every hidden layer bottom-up,
then target phase); per time step the spike uniforms (numbers of the streams'
SplitMix64 sequence), input first then layers bottom-up, for every source whose spikes are consumed (input: spiking
feedforward; hidden layer: spiking feedforward, or spiking feedback and it is a
feedback source; output: spiking feedback and there is a hidden layer); after
each update, for noisy symmetric feedback, one normal draw per hidden layer from
the top down, shaped like ``W_{l+1}.T``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import blas as _blas

from bioplaus.errors import InvalidConfigurationError
from bioplaus.models import _segdend_kernel as _kernel

#: Plateau offset cap (steps before the phase end) and spread, as in the reference.
PLATEAU_OFFSET_MAX = 5
PLATEAU_OFFSET_SD = 3.0
#: Wald (inverse Gaussian) mean and scale of the extra phase length, reference values.
WALD_MEAN, WALD_SCALE = 2.0, 1.0
#: Sparse feedback: fraction of zeroed feedback weights, gain of the survivors.
SPARSE_FRACTION, SPARSE_GAIN = 0.8, 5.0
NOISY_SYMMETRIC_SD = 0.05
#: Spike uniforms are drawn for as many steps at once as fit in this many numbers.
UNIFORM_BLOCK = 1 << 20


def sigmoid(x):
    """Logistic function, overflow-free (``0.5 + 0.5 tanh(x / 2)``)."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def psp_kernel(mem, tau_s, tau_L, dtype=np.float64):
    """``kappa(u) = (exp(-u/tau_L) - exp(-u/tau_s)) / (tau_L - tau_s)`` for u = 1..mem (steps)."""
    u = np.arange(1, mem + 1, dtype=np.float64)
    return ((np.exp(-u / tau_L) - np.exp(-u / tau_s)) / (tau_L - tau_s)).astype(dtype)


def weight_optimization_stats(N, lambda_max):
    """Mean and standard deviation of initial weights for ``N`` inputs (``W_avg``, ``W_sd``).

    Chosen so that dendritic potentials start near mean 3, s.d. 3 with a bias
    of 0.8, assuming the sigmoid's linear slope ``nu = lambda_max / 4``.
    """
    V_avg, V_sd, b_avg = 3.0, 3.0, 0.8
    nu = lambda_max * 0.25
    V_sm = V_sd**2 + V_avg**2
    W_avg = (V_avg - b_avg) / (nu * N * V_avg)
    W_sm = (
        V_sm + nu**2 * (N - N**2) * W_avg**2 * V_avg**2 - 2 * N * nu * b_avg * V_avg * W_avg - b_avg**2
    ) / (N * nu**2 * V_sm)
    return W_avg, math.sqrt(max(W_sm - W_avg**2, 0.0))


def poisson_from_uniform(lam, u):
    """Poisson counts of mean ``lam`` by inverse CDF of uniforms ``u`` (same shape).

    Exact (no truncation): count = number of CDF values ``F(k) < u``, with
    ``F(0) = exp(-lam)``, ``F(k) = F(k-1) + exp(-lam) lam^k / k!``.
    Non-positive rates give 0. Returns an array of ``lam``'s dtype. The
    simulator samples spikes with the same compiled rule.
    """
    lam = np.ascontiguousarray(lam)
    out = np.empty_like(lam)
    _kernel.poisson_counts(lam.reshape(-1), np.ascontiguousarray(u, dtype=lam.dtype).reshape(-1),
                           out.reshape(-1))
    return out


class RandomStreams:
    """Every random draw of a simulation (injectable so two simulators can share them).

    Spike uniforms come from one SplitMix64 stream (Steele, Lea & Flood 2014)
    seeded from ``rng``: number ``i`` of the stream is a pure function of
    ``(spike_key, i)``, so the compiled simulator generates them where they are
    used and any grouping of draws gives the same numbers. float32 streams
    carry 24 random bits per uniform, float64 streams 53.
    """

    def __init__(self, rng: np.random.Generator, dtype=np.float32):
        self.rng, self.dtype = rng, np.dtype(dtype)
        self.spike_key = np.uint64(rng.integers(0, 2**64, dtype=np.uint64))
        self.spike_counter = 0  # uniforms used so far
        self.spike_bits = 24 if self.dtype == np.float32 else 53

    def uniform(self, shape):
        """The next ``prod(shape)`` spike uniforms in [0, 1), in the streams' dtype."""
        out = np.empty(shape, self.dtype)
        _kernel.fill_uniforms(self.spike_key, self.spike_counter, self.spike_bits, out.reshape(-1))
        self.spike_counter += out.size
        return out

    def extra_phase_length(self):
        """``int(Wald(2, 1))`` extra steps of a random phase length."""
        return int(self.rng.wald(WALD_MEAN, WALD_SCALE))

    def plateau_offsets(self, shape):
        """Steps before the phase end at which each neuron's plateau happens: ``min(int|N(0,3)|, 5)``."""
        return np.minimum(np.abs(self.rng.normal(0.0, PLATEAU_OFFSET_SD, size=shape)).astype(np.int64),
                          PLATEAU_OFFSET_MAX)

    def normal(self, scale, shape):
        return self.rng.normal(0.0, scale, size=shape)


@dataclass(frozen=True)
class Config:
    """All numbers and switches of one network (validated by :func:`validate`).

    ``sizes = (n_in, n_1, ..., n_out)``; ``n_out = units_per_class * n_classes``.
    Times are in steps; ``lambda_max`` is spikes per step; ``f_etas`` has one
    rate per layer (hidden layers then output), ``b_etas`` one per hidden layer.
    """

    sizes: tuple
    units_per_class: int = 1
    dt: float = 1.0
    l_f_phase: int = 2
    l_t_phase: int = 2
    l_f_phase_test: int = 2
    integration_time: int = 1
    integration_time_test: int = 1
    mem: int = 10
    lambda_max: float = 0.2
    tau_s: float = 3.0
    tau_L: float = 10.0
    g_B: float = 0.6
    g_A: float = 0.05
    E_E: float = 8.0
    E_I: float = -8.0
    f_etas: tuple = (0.21, 0.21)
    b_etas: tuple = (0.0,)
    use_sparse_feedback: bool = False
    use_conductances: bool = False
    use_broadcast: bool = True
    use_spiking_feedback: bool = False
    use_spiking_feedforward: bool = False
    use_symmetric_weights: bool = False
    noisy_symmetric_weights: bool = False
    update_feedback_weights: bool = False
    use_apical_conductance: bool = False
    use_weight_optimization: bool = True
    use_feedback_bias: bool = False
    use_rand_phase_lengths: bool = False
    use_rand_plateau_times: bool = False
    use_backprop: bool = False

    @property
    def n_layers(self):
        return len(self.sizes) - 1

    @property
    def g_L(self):
        return 1.0 / self.tau_L

    @property
    def g_A_eff(self):
        return self.g_A if self.use_apical_conductance else 0.0

    @property
    def g_D(self):
        return self.g_B

    @property
    def k_B(self):
        return self.g_B / (self.g_L + self.g_B + self.g_A_eff)

    @property
    def k_D(self):
        return self.g_D / (self.g_L + self.g_D)

    @property
    def P_hidden(self):
        return 20.0 / self.lambda_max

    @property
    def P_final(self):
        return 20.0 / self.lambda_max**2

    def feedback_source(self, l):
        """Index of the layer whose activity reaches hidden layer ``l``'s apical dendrite."""
        return self.n_layers - 1 if self.use_broadcast else l + 1


def validate(cfg: Config):
    """Raise :class:`InvalidConfigurationError` naming the parameters of an invalid combination."""
    def bad(msg):
        raise InvalidConfigurationError(msg)

    if len(cfg.sizes) < 2 or any(int(n) < 1 for n in cfg.sizes):
        bad(f"layer sizes must be positive integers, got {cfg.sizes}")
    for name in ("l_f_phase", "l_t_phase", "l_f_phase_test", "integration_time",
                 "integration_time_test", "mem", "units_per_class"):
        if int(getattr(cfg, name)) < 1:
            bad(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.integration_time > min(cfg.l_f_phase, cfg.l_t_phase):
        bad(f"integration_time ({cfg.integration_time}) is longer than a training phase "
            f"(l_f_phase={cfg.l_f_phase}, l_t_phase={cfg.l_t_phase})")
    if cfg.integration_time_test > cfg.l_f_phase_test:
        bad(f"integration_time_test ({cfg.integration_time_test}) is longer than the test phase "
            f"(l_f_phase_test={cfg.l_f_phase_test})")
    for name in ("dt", "lambda_max", "tau_s", "tau_L", "g_B"):
        v = getattr(cfg, name)
        if not (np.isfinite(v) and v > 0):
            bad(f"{name} must be a positive number, got {v}")
    if cfg.tau_s == cfg.tau_L:
        bad(f"tau_s and tau_L must differ (PSP kernel), both are {cfg.tau_s}")
    if cfg.use_apical_conductance and not (np.isfinite(cfg.g_A) and cfg.g_A >= 0):
        bad(f"g_A must be non-negative with use_apical_conductance, got {cfg.g_A}")
    for name in ("E_E", "E_I"):
        if not np.isfinite(getattr(cfg, name)):
            bad(f"{name} must be finite")
    if len(cfg.f_etas) != cfg.n_layers:
        bad(f"f_etas needs one rate per layer ({cfg.n_layers}), got {len(cfg.f_etas)}")
    if len(cfg.b_etas) != cfg.n_layers - 1:
        bad(f"b_etas needs one rate per hidden layer ({cfg.n_layers - 1}), got {len(cfg.b_etas)}")
    if not all(np.isfinite(cfg.f_etas)) or not all(np.isfinite(cfg.b_etas)):
        bad("f_etas and b_etas must be finite")
    if cfg.use_backprop and cfg.n_layers < 2:
        bad("use_backprop needs at least one hidden layer")
    if cfg.noisy_symmetric_weights and not cfg.use_symmetric_weights:
        bad("noisy_symmetric_weights requires use_symmetric_weights")


# ---------------------------------------------------------------- weights


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
    call :meth:`flush` first. Arrays are updated in place, except ``YT``
    under symmetric feedback (replaced: :meth:`impose_symmetry`).
    """

    def __init__(self, WT, b, YT, c, masks):
        self.WT, self.b, self.YT, self.c, self.masks = WT, b, YT, c, masks
        self.pending = [None] * len(WT)
        self.pending_m = np.zeros(len(WT), np.int64)
        self._kernel_arrays = None

    def kernel_arrays(self):
        """Tuples of this network's arrays for the compiled loop (see ``_segdend_kernel``)."""
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
                rank_update(self.WT[l], pend.P[:m], pend.Q[:m], 1.0)
                self.pending_m[l] = 0

    @classmethod
    def initial(cls, cfg: Config, rng: np.random.Generator, dtype=np.float32):
        """Initial weights (plain or weight-optimised), feedback, sparse masks, symmetry."""
        sizes, L = cfg.sizes, cfg.n_layers
        WT, b = [None] * L, [None] * L

        def centred(shape):  # U(-1/2, 1/2): unit variance after scaling by 3.465 ~ 2 sqrt(3)
            return rng.random(shape) - 0.5

        for l in range(L):
            N, n = sizes[l], sizes[l + 1]
            if cfg.use_weight_optimization:
                W_avg, W_sd = weight_optimization_stats(N, cfg.lambda_max)
                W = W_avg + 3.465 * W_sd * centred((n, N))
                b[l] = 0.8 + 3.465 * 0.001 * centred(n)
            else:
                W = 0.1 * centred((n, N))
                b[l] = 1.0 * centred(n)
            WT[l] = np.ascontiguousarray(W.T)
        YT, c, masks = [None] * (L - 1), [None] * (L - 1), [None] * (L - 1)
        for l in range(L - 1):
            n, n_src = sizes[l + 1], sizes[cfg.feedback_source(l) + 1]
            if cfg.use_weight_optimization:
                Y_avg, Y_sd = weight_optimization_stats(n, cfg.lambda_max)
                Y = Y_avg + 3.465 * Y_sd * centred((n, n_src))
                c[l] = Y_avg + 3.465 * Y_sd * centred(n)
            else:
                Y = centred((n, n_src))
                c[l] = centred(n)
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
        transpose. Sparse masks are applied afterwards (survivors times 5);
        the products are formed from the unmasked matrices.
        """
        L = cfg.n_layers
        unmasked = [None] * (L - 1)
        for l in range(L - 2, -1, -1):
            Wt_above = self.WT[l + 1].T  # W_{l+1} (n_{l+1}, n_l) == Y_l^T for the layer above
            if noise is not None:
                Wt_above = Wt_above + noise(Wt_above.shape[::-1]).T.astype(Wt_above.dtype)
            if cfg.use_broadcast and l < L - 2:
                # Y_l = W_{l+1}^T @ Y_{l+1}  ->  YT_l = YT_{l+1} @ W_{l+1}
                unmasked[l] = unmasked[l + 1] @ Wt_above
            else:
                unmasked[l] = np.array(Wt_above, order="C")
        for l in range(L - 1):
            Y = unmasked[l]
            if self.masks[l] is not None:
                Y = Y * (self.masks[l] * SPARSE_GAIN)
            self.YT[l] = np.ascontiguousarray(Y, dtype=self.WT[0].dtype)
        self._kernel_arrays = None

    def copy(self):
        self.flush()
        cp = lambda xs: [None if x is None else x.copy() for x in xs]  # noqa: E731
        return Weights(cp(self.WT), cp(self.b), cp(self.YT), cp(self.c), cp(self.masks))

    def all_finite(self):
        self.flush()
        return all(np.isfinite(x).all() for x in (*self.WT, *self.b, *self.YT, *self.c) if x is not None)


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
        self._decays = np.exp(-1.0 / np.array([cfg.tau_L, cfg.tau_s]))

    def reproject(self, weights: Weights):
        """Make every cached drive consistent with new weights."""
        if any(p.spiking for p in self.ff):
            weights.flush()
        self.ff_seen[:] = -1
        self.fb_seen[:] = -1
        if any(p.spiking for p in self.ff + self.fb):
            age = (self.step - np.arange(self.mem)) % self.mem  # ring slot k holds the projection of step - age[k]
            trace_weights = (self._decays[:, None] ** (age + 1)).astype(self.dtype)
        for l, p in enumerate(self.ff):
            if p.spiking:
                p.reproject(weights.WT[l], trace_weights)
        for l, p in enumerate(self.fb):
            if p.spiking:
                p.reproject(weights.YT[l], trace_weights)


class Simulator:
    """Runs phases on a :class:`State` with given :class:`Weights` and :class:`Config`."""

    def __init__(self, cfg: Config, dtype=np.float32):
        validate(cfg)
        self.cfg = cfg
        self.dtype = np.dtype(dtype)
        mem = cfg.mem
        self.kappa = psp_kernel(mem, cfg.tau_s, cfg.tau_L, np.float64)
        # PSP traces (see _segdend_kernel._project_traced): d_L, d_L^(mem+1), d_s, d_s^(mem+1), 1/(tau_L - tau_s)
        d_L, d_s = math.exp(-1.0 / cfg.tau_L), math.exp(-1.0 / cfg.tau_s)
        self._decay = np.array([d_L, d_L ** (mem + 1), d_s, d_s ** (mem + 1), 1.0 / (cfg.tau_L - cfg.tau_s)],
                               dtype=self.dtype)
        self._psp_cache = {}
        # constants of the compiled step loop (see _segdend_kernel.phase_steps)
        self._consts = np.array([1 - cfg.dt * (cfg.g_L + cfg.g_B + cfg.g_A_eff),  # keep_h
                                 1 - cfg.dt * (cfg.g_L + cfg.g_D),  # keep_o
                                 1 - cfg.dt * (cfg.g_L + cfg.g_D + 1.0),  # keep_t (g_E + g_I = 1)
                                 cfg.dt * cfg.g_B, cfg.dt * cfg.g_A_eff, cfg.k_B, cfg.k_D, cfg.g_D, cfg.g_L,
                                 cfg.lambda_max, 1.0, cfg.E_E, cfg.E_I, cfg.dt], dtype=self.dtype)
        self._fb_src = np.array([cfg.feedback_source(l) for l in range(cfg.n_layers - 1)] or [0], np.int64)
        self._dummy1, self._dummy2 = np.zeros(0, self.dtype), np.zeros((1, 1), self.dtype)
        self._error_consts = np.array([cfg.k_B, cfg.k_D, cfg.lambda_max], dtype=self.dtype)
        self._no_plateau = padded([], cfg.n_layers, np.zeros((1, 1), np.int64), -1)
        self._no_history = np.zeros(cfg.mem, self.dtype)
        self._mode_cache, self._scale_cache = {}, {}

    # -- helpers ---------------------------------------------------------

    def _psp_weights(self, L_phase, T, lag, end=None):
        """Weight of a spike at phase step j (j = 1 - mem - 1 .. L) in the mean PSP over the window.

        Returns ``(offset, w)`` with ``w[j - offset]``. The window is steps
        ``end - T + 1 .. end`` (``end`` defaults to the phase end).
        """
        key = (L_phase, T, lag, end)
        cached = self._psp_cache.get(key)
        if cached is not None:
            return cached
        mem, kappa = self.cfg.mem, self.kappa
        end = L_phase if end is None else end
        offset = end - T + 1 - lag - (mem - 1)
        w = np.zeros(end - offset + 1)
        for t in range(end - T + 1, end + 1):
            for age in range(mem):
                j = t - lag - age
                w[j - offset] += kappa[age] / T
        w = w.astype(self.dtype)
        self._psp_cache[key] = (offset, w)
        return offset, w

    # -- phases ----------------------------------------------------------

    def run_phase(self, st: State, w: Weights, L_phase, T, *, target=None, streams=None,
                  plateau_end=None, collect_psp=False, collect_A=True, collect_lam=False):
        """Simulate one phase of ``L_phase`` steps; return window means.

        ``target`` (B, n_out) one-hot teaching signal (target phase) or None.
        ``plateau_end[l]`` (B, n_l) int: last step of hidden layer ``l``'s
        apical window (per neuron), else the phase end. Returns a dict with
        ``C`` (per layer), ``A`` (hidden), ``lam_out``, ``psp_ff``, ``psp_fb``
        means over the last ``T`` steps (A over each neuron's plateau window).
        The arrays belong to the state and are overwritten by its next phase
        of the same kind (copy them to keep them). The step loop is compiled
        (:mod:`._segdend_kernel`).
        """
        return dict(self._simulate(st, w, L_phase, T, target, streams, plateau_end, collect_psp, collect_A,
                                   collect_lam)[1])

    def _simulate(self, st, w, L_phase, T, target, streams, plateau_end, collect_psp, collect_A, collect_lam):
        """:meth:`run_phase`, returning ``(sums, out)``: the window means as the compiled loop's
        tuples (C, A, lam_out, psp_ff, psp_fb; placeholders where not collected) and as a dict."""
        cfg, dt = self.cfg, self.dtype
        mem = cfg.mem
        need_fb_psp = collect_psp and cfg.update_feedback_weights
        switches = (target is not None, collect_A, collect_lam, collect_psp, need_fb_psp,
                    plateau_end is not None)
        head, sums, out = self._phase_arrays(st, w, switches)
        if target is not None:
            np.copyto(st.target, target)
        if plateau_end is not None:
            for buf_end, buf_start, pe in zip(st.plateau_end, st.plateau_start, plateau_end):
                np.copyto(buf_end, pe)
                np.subtract(buf_end, T - 1, out=buf_start)
        if cfg.use_spiking_feedforward and not st.p0_valid:  # input fixed for the example: exp(-rate) once
            src = st.sources[0]
            np.maximum(src.rates, 0, out=src.rates)
            np.negative(src.rates, out=st.p0)
            np.exp(st.p0, out=st.p0)
            st.p0_valid = True
        # spike-time weights of the mean PSP (spiking paths), and of the ring's spikes before the phase
        psp = [(0, self._dummy1, self._no_history)] * 2
        for lag, on in ((0, collect_psp and cfg.use_spiking_feedforward),
                        (1, need_fb_psp and cfg.use_spiking_feedback)):
            if on:
                off, wv = self._psp_weights(L_phase, T, lag)
                hist_w = np.zeros(mem, dt)
                for age in range(mem):  # ring slot of phase step -age (step 0 = the last simulated)
                    if -age - off >= 0:
                        hist_w[(st.step - age) % mem] = wv[-age - off]
                psp[lag] = (off, wv, hist_w)
        psp_args = (psp[0][1], psp[0][0], psp[1][1], psp[1][0], psp[0][2], psp[1][2])
        start = L_phase - T + 1
        per_step, u_off = st.u_per_step, st.u_off
        t, step = 1, st.step
        if per_step and hasattr(streams, "spike_key"):  # uniforms generated in the compiled loop
            u_start = streams.spike_counter
            streams.spike_counter += L_phase * per_step
            step, _ = _kernel.phase_steps(1, L_phase, L_phase, start, step, *head, *sums, self._dummy1, u_start,
                                          streams.spike_key, streams.spike_bits, u_off, per_step, *psp_args)
            t = L_phase + 1
        block = L_phase if per_step == 0 else max(1, min(L_phase, UNIFORM_BLOCK // per_step))
        while t <= L_phase:  # rate mode, or streams that only offer uniform(shape)
            t_last = min(L_phase, t + block - 1)
            U = (streams.uniform((t_last - t + 1, per_step)).astype(dt, copy=False).reshape(-1) if per_step
                 else self._dummy1)
            step, done = _kernel.phase_steps(t, t_last, L_phase, start, step, *head, *sums, U, 0, np.uint64(0), 0,
                                             u_off, per_step, *psp_args)
            if done:
                break
            t = t_last + 1
        st.step = step
        return sums, out

    def _update_modes(self, w, defer):
        """Per layer, how an online update is applied (see ``_segdend_kernel.online_update``),
        and the layers whose updates are queued."""
        key = (defer, tuple(x.size for x in w.WT))
        cached = self._mode_cache.get(key)
        if cached is None:
            modes = np.array([(1 if defer else 0) if x.size >= DEFER_MIN_SIZE else 2 for x in w.WT], np.int64)
            cached = self._mode_cache[key] = (modes, [l for l, m in enumerate(modes) if m == 1])
        return cached

    def _scales(self, f_etas):
        """Per layer, the forward learning rate times the layer's P factor (cached)."""
        key = tuple(f_etas)
        scales = self._scale_cache.get(key)
        if scales is None:
            cfg = self.cfg
            scales = self._scale_cache[key] = np.array(
                [f * (cfg.P_final if l == cfg.n_layers - 1 else cfg.P_hidden) for l, f in enumerate(key)],
                self.dtype)
        return scales

    def _phase_arrays(self, st, w, switches):
        """Leading arguments of the compiled loop (switches, constants, weights, state), the
        window-sum arrays and the result dict of one kind of phase; cached on the state."""
        ka = w.kernel_arrays()
        cached = st.phase_cache.get(switches)
        if cached is not None and cached[0] is ka:
            return cached[1:]
        cfg, dt = self.cfg, self.dtype
        nL, B, sizes = cfg.n_layers, st.B, cfg.sizes
        teach, collect_A, collect_lam, collect_psp, need_fb_psp, plateau = switches
        flags = np.array([cfg.use_spiking_feedforward, cfg.use_spiking_feedback and st.apical,
                          cfg.use_conductances, cfg.use_apical_conductance, st.apical, teach, collect_A,
                          collect_lam, collect_psp, need_fb_psp, plateau, *st.spiking_src], dtype=np.int64)
        d2 = self._dummy2
        pad_int = self._no_plateau[0]
        pl = ((padded(st.plateau_start, nL, pad_int, -1), padded(st.plateau_end, nL, pad_int, -1)) if plateau
              else (self._no_plateau,) * 2)
        head = (cfg.mem, nL, flags, self._fb_src, self._consts, self._decay,
                *ka, *st.kernel_arrays, st.target, *pl)
        if cached is not None:  # same state, new weight arrays: keep the sums
            sums, out = cached[2], cached[3]
        else:
            C_sum = [np.zeros((B, n), dt) for n in sizes[1:]]
            A_sum = [np.zeros((B, n), dt) for n in sizes[1:-1]] if collect_A else []
            lam_sum = np.zeros((B, sizes[-1]), dt) if collect_lam else d2
            psp_ff = [np.zeros((B, n), dt) for n in sizes[:-1]] if collect_psp else []
            psp_fb = [np.zeros((B, sizes[self._fb_src[l] + 1]), dt) for l in range(nL - 1)] if need_fb_psp else []
            sums = (padded(C_sum, nL, d2), padded(A_sum, nL, d2, -1), lam_sum, padded(psp_ff, nL, d2),
                    padded(psp_fb, nL, d2, -1))
            out = {"C": C_sum}
            if collect_A:
                out["A"] = A_sum
            if collect_lam:
                out["lam_out"] = lam_sum
            if collect_psp:
                out["psp_ff"] = psp_ff
                if need_fb_psp:
                    out["psp_fb"] = psp_fb
        st.phase_cache[switches] = (ka, head, sums, out)
        return head, sums, out

    # -- training ----------------------------------------------------------

    def set_input(self, st: State, X):
        """Present inputs ``X`` (B, n_in), pixel values in [0, 1]: rates ``lambda_max * X``."""
        src = st.sources[0]
        np.multiply(X, self.dtype.type(self.cfg.lambda_max), out=src.rates)
        src.version += 1
        st.p0_valid = False

    def train_batch(self, st: State, w: Weights, X, targets, streams: RandomStreams,
                    f_etas=None, b_etas=None):
        """One forward + target phase on ``B`` examples, then the mean of their updates.

        ``X`` (B, n_in) float in [0, 1]; ``targets`` (B, n_out) 0/1 teaching
        signals. Updates ``w`` in place; returns ``(loss_out, finite)`` where
        ``loss_out`` is the mean output-layer local loss.
        """
        cfg, dt = self.cfg, self.dtype
        nL = cfg.n_layers
        B = st.B
        Lf, Lt, T = cfg.l_f_phase, cfg.l_t_phase, cfg.integration_time
        if cfg.use_rand_phase_lengths:
            Lf += streams.extra_phase_length()
            Lt += streams.extra_phase_length()
        pe_f = pe_t = None
        if cfg.use_rand_plateau_times and nL > 1:
            pe_f = [Lf - np.minimum(streams.plateau_offsets((B, cfg.sizes[l + 1])), Lf - T)
                    for l in range(nL - 1)]
            pe_t = [Lt - np.minimum(streams.plateau_offsets((B, cfg.sizes[l + 1])), Lt - T)
                    for l in range(nL - 1)]
        self.set_input(st, X)
        fsums, fwd = self._simulate(st, w, Lf, T, None, streams, pe_f, True, True, False)
        tsums, _ = self._simulate(st, w, Lt, T, targets, streams, pe_t, False, True, True)
        f_etas = cfg.f_etas if f_etas is None else f_etas
        b_etas = cfg.b_etas if b_etas is None else b_etas
        if cfg.use_backprop or cfg.use_symmetric_weights or cfg.use_spiking_feedforward:
            w.flush()  # these read WT directly
        # errors (all from the weights the examples were simulated with)
        if st.errors is None:  # buffers of this state: E per layer, E_inv per hidden layer
            st.errors = (padded([np.zeros_like(c) for c in st.C], nL, self._dummy2),
                         padded([np.zeros_like(a) for a in st.A], nL, self._dummy2, -1))
        E, E_inv = st.errors
        WT, b, _, _, P, Q, pending_m = w.kernel_arrays()
        loss, finite = _kernel.local_errors(nL, fsums[0], fsums[1], tsums[1], tsums[2], WT, self._error_consts,
                                            cfg.use_backprop, cfg.update_feedback_weights, E, E_inv)
        if not finite:
            return loss, False
        # apply the mean of the B per-example updates
        scales = self._scales(f_etas)
        if B == 1:  # online rule: small updates compiled, large ones queued as low-rank sums or by BLAS
            defer = not (cfg.use_spiking_feedforward or cfg.use_backprop or cfg.use_symmetric_weights)
            mode, deferred = self._update_modes(w, defer)
            if w.ensure_pending(deferred):
                WT, b, _, _, P, Q, pending_m = w.kernel_arrays()
            _kernel.online_update(nL, WT, b, fsums[3], E, scales, mode, P, Q, pending_m)
            for l in range(nL):
                if mode[l] == 0:
                    rank_update(w.WT[l], fwd["psp_ff"][l], E[l], -scales[l])
                elif mode[l] == 1 and pending_m[l] == DEFER_RANK:
                    w.flush(l)
        else:
            for l in range(nL):
                w.flush(l)
                rank_update(w.WT[l], fwd["psp_ff"][l], E[l], -scales[l] / B)
                w.b[l] -= scales[l] * E[l].mean(axis=0)
        if cfg.update_feedback_weights:
            for l in range(nL - 1):
                rank_update(w.YT[l], fwd["psp_fb"][l], E_inv[l], -b_etas[l] / B)
                if w.c[l] is not None:
                    w.c[l] -= dt.type(b_etas[l]) * E_inv[l].mean(axis=0)
                if w.masks[l] is not None and not cfg.use_symmetric_weights:
                    w.YT[l] *= w.masks[l]
        if cfg.use_symmetric_weights:
            noise = None
            if cfg.noisy_symmetric_weights:
                noise = lambda shape: streams.normal(NOISY_SYMMETRIC_SD, shape)  # noqa: E731
            w.impose_symmetry(cfg, noise)
        st.reproject(w)
        finite = bool(np.isfinite(st.sources[-1].rates.sum())) and bool(np.isfinite(w.b[0].sum()))
        return loss, finite

    # -- testing -----------------------------------------------------------

    def output_scores(self, w: Weights, X, streams: RandomStreams | None):
        """Mean output somatic potential over the test window, ``(n, n_out)``.

        Voltages and spike histories are cleared before each example (a fresh
        state per call); all rows are simulated side by side.
        """
        cfg = self.cfg
        w.flush()
        apical = cfg.use_conductances and cfg.use_apical_conductance
        st = State(cfg, X.shape[0], self.dtype, apical=apical)
        st.reproject(w)
        self.set_input(st, X)
        res = self.run_phase(st, w, cfg.l_f_phase_test, cfg.integration_time_test, streams=streams,
                             collect_A=False)
        return res["C"][-1]
