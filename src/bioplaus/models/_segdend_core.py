"""Vectorised simulation core of the segregated-dendrite network.

Pure NumPy on arrays: knows nothing of scikit-learn, optuna or files. The
estimator in :mod:`bioplaus.models.segdend` wraps it. Parameter names mirror
the paper and its reference code (``l_f_phase``, ``lambda_max``, ``g_B`` ...);
the equations are those of ``design/segregated-dendrites.md``.

Layout. ``B`` examples are simulated side by side as rows: every state array
is ``(B, n)``. Feedforward weights are stored transposed, ``WT[l]`` of shape
``(n_{l-1}, n_l)`` (so ``W_l = WT[l].T`` in the paper's orientation), feedback
weights likewise ``YT[l]`` of shape ``(n_src, n_l)`` (``Y_l = YT[l].T``).

Time. Only the time-step loop is a Python loop. Work is skipped where it cannot
change a result: in rate mode a dendritic drive is recomputed only when its
source rates changed (the input never changes within an example), and once a
whole step leaves every quantity unchanged the rest of the phase is
fast-forwarded (its window sums are added in one go). In spike mode the
filtered input ``W @ PSP(t)`` is kept as a ring buffer of projected spike
vectors ``W @ S(j)`` (spikes are sparse: only active inputs are multiplied),
combined with the kernel weights in one product per step; the mean PSP needed
by the learning rule is accumulated spike by spike with precomputed weights.

Random streams are injectable (:class:`RandomStreams`); the order of draws is:
per training batch (1) phase lengths if random (forward, then target),
(2) plateau offsets if random (forward phase for every hidden layer bottom-up,
then target phase); per time step the spike uniforms, input first then layers
bottom-up, for every source whose spikes are consumed (input: spiking
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

#: Plateau offset cap (steps before the phase end) and spread, as in the reference.
PLATEAU_OFFSET_MAX = 5
PLATEAU_OFFSET_SD = 3.0
#: Wald (inverse Gaussian) mean and scale of the extra phase length, reference values.
WALD_MEAN, WALD_SCALE = 2.0, 1.0
#: Sparse feedback: fraction of zeroed feedback weights, gain of the survivors.
SPARSE_FRACTION, SPARSE_GAIN = 0.8, 5.0
NOISY_SYMMETRIC_SD = 0.05


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


def poisson_from_uniform(lam, u, p=None):
    """Poisson counts of mean ``lam`` by inverse CDF of uniforms ``u`` (same shape).

    Exact (no truncation): count = number of CDF values ``F(k) < u``, with
    ``F(0) = exp(-lam)``, ``F(k) = F(k-1) + exp(-lam) lam^k / k!``.
    Non-positive rates give 0. ``p`` = ``exp(-lam)`` if already known.
    Returns an array of ``lam``'s dtype. Vectorised for counts 0 and 1; the
    rarer larger counts on shrinking subsets.
    """
    if p is None:
        lam = np.maximum(lam, 0)
        p = np.exp(-lam)
    counts = np.greater(u, p).astype(lam.dtype)
    flat = counts.reshape(-1)
    idx = flat.nonzero()[0]
    if idx.size:
        uf, pf, lf = u.reshape(-1)[idx], p.reshape(-1)[idx], lam.reshape(-1)[idx]
        term = pf * lf
        cdf = pf + term
        live = (uf > cdf).nonzero()[0]  # count >= 2: shrinking vectorised loop
        k = 1
        while live.size:
            k += 1
            idx, uf, lf = idx[live], uf[live], lf[live]
            term = term[live] * lf / k
            cdf = cdf[live] + term
            flat[idx] = k
            # once the pmf term underflows the cdf cannot grow any more (a uniform
            # draw above the float cdf's limit): stop there instead of looping forever
            live = ((uf > cdf) & (term > 0)).nonzero()[0]
    return counts


class RandomStreams:
    """Every random draw of a simulation (injectable so two simulators can share them)."""

    def __init__(self, rng: np.random.Generator, dtype=np.float32):
        self.rng, self.dtype = rng, np.dtype(dtype)

    def uniform(self, shape):
        """Uniforms in [0, 1) for spike sampling."""
        return self.rng.random(shape, dtype=self.dtype) if self.dtype in (np.float32, np.float64) \
            else self.rng.random(shape)

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
    """Pending rank-m update ``WT += P[:m].T @ Q[:m]`` of one feedforward matrix."""

    def __init__(self, n_in, n_out, dtype):
        self.P = np.zeros((DEFER_RANK, n_in), dtype)
        self.Q = np.zeros((DEFER_RANK, n_out), dtype)
        self.m = 0


class Weights:
    """Weights of one network: ``WT``, ``b`` per layer; ``YT``, ``c``, sparse masks per hidden layer.

    ``WT[l]`` may carry a pending low-rank update (``pending[l]``); readers other
    than the simulator's rate-mode drive call :meth:`flush` first.
    """

    def __init__(self, WT, b, YT, c, masks):
        self.WT, self.b, self.YT, self.c, self.masks = WT, b, YT, c, masks
        self.pending = [None] * len(WT)

    def defer(self, l, psp, E, alpha):
        """Queue ``WT[l] += alpha * psp.T @ E`` (one example); apply when DEFER_RANK are queued."""
        pend = self.pending[l]
        if pend is None:
            pend = self.pending[l] = _Pending(*self.WT[l].shape, self.WT[l].dtype)
        pend.P[pend.m] = psp[0]
        np.multiply(E[0], alpha, out=pend.Q[pend.m])
        pend.m += 1
        if pend.m == DEFER_RANK:
            self.flush(l)

    def flush(self, layer=None):
        """Apply pending updates (of one layer, or all)."""
        for l in range(len(self.WT)) if layer is None else (layer,):
            pend = self.pending[l]
            if pend is not None and pend.m:
                rank_update(self.WT[l], pend.P[:pend.m], pend.Q[:pend.m], 1.0)
                pend.m = 0

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

    def copy(self):
        self.flush()
        cp = lambda xs: [None if x is None else x.copy() for x in xs]  # noqa: E731
        return Weights(cp(self.WT), cp(self.b), cp(self.YT), cp(self.c), cp(self.masks))

    def all_finite(self):
        self.flush()
        return all(np.isfinite(x).all() for x in (*self.WT, *self.b, *self.YT, *self.c) if x is not None)


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


class _Source:
    """Activity of one layer (index -1 = input): rates, version, spike ring buffer."""

    def __init__(self, B, n, mem, spiking, dtype):
        self.rates = np.zeros((B, n), dtype)
        self.version = 0
        self.hist = np.zeros((mem, B, n), dtype) if spiking else None
        self.p0 = None  # exp(-rate) of the input, cached while the input is fixed


class _Pathway:
    """Dendritic drive ``PSP @ M`` of one compartment (``M`` = ``WT[l]`` or ``YT[l]``).

    ``lag`` is 0 when the source updates earlier in the same step (feedforward)
    and 1 when it updates later (feedback): the PSP then ends one step back.
    """

    def __init__(self, source, lag, spiking, B, n_out, mem, dtype):
        self.source, self.lag, self.spiking = source, lag, spiking
        self.seen = -1
        self.drive = np.zeros((B, n_out), dtype)
        self.proj = np.zeros((mem, B, n_out), dtype) if spiking else None

    def project(self, M, slot, S):
        """Projection ``S @ M`` of the spikes just written to ``slot`` (sparse: active inputs only)."""
        if S.shape[0] == 1:
            cols = S[0].nonzero()[0]
            if cols.size * 2 > S.shape[1]:
                np.dot(S[0], M, out=self.proj[slot, 0])
            elif cols.size:
                np.dot(S[0, cols], M[cols], out=self.proj[slot, 0])
            else:
                self.proj[slot] = 0
            return
        cols = S.any(axis=0).nonzero()[0]
        if cols.size == 0:
            self.proj[slot] = 0
        elif cols.size * 2 > S.shape[1]:
            np.matmul(S, M, out=self.proj[slot])
        else:
            np.matmul(S[:, cols], M[cols], out=self.proj[slot])

    def reproject(self, M):
        """Recompute all projections after ``M`` changed."""
        H = self.source.hist
        mem, B, n = H.shape
        flat = H.reshape(mem * B, n)
        cols = np.flatnonzero(flat.any(axis=0))
        out = self.proj.reshape(mem * B, -1)
        if cols.size == 0:
            out[...] = 0
        elif cols.size * 2 > n:
            np.matmul(flat, M, out=out)
        else:
            np.matmul(flat[:, cols], M[cols], out=out)


class State:
    """Dynamic state of ``B`` side-by-side simulations: somatic potentials, rates, spike history."""

    def __init__(self, cfg: Config, B: int, dtype, apical: bool = True):
        """``apical=False`` (testing without apical conductance): apical
        compartments are not simulated (they cannot affect the output)."""
        self.B, self.dtype, self.apical = B, np.dtype(dtype), apical
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
        self.sources = [_Source(B, sizes[i], mem, spiking_src[i], dtype) for i in range(L + 1)]
        self.C = [np.zeros((B, sizes[l + 1]), dtype) for l in range(L)]
        self.A = [np.zeros((B, sizes[l + 1]), dtype) for l in range(L - 1)]
        self.ff = [_Pathway(self.sources[l], 0, cfg.use_spiking_feedforward, B, sizes[l + 1], mem, dtype)
                   for l in range(L)]
        self.fb = [_Pathway(self.sources[cfg.feedback_source(l) + 1], 1, cfg.use_spiking_feedback and apical, B,
                            sizes[l + 1], mem, dtype) for l in range(L - 1)]
        self.step = 0  # global step counter; slot of step g is g % mem

    def reproject(self, weights: Weights):
        """Make every cached drive consistent with new weights."""
        if any(p.spiking for p in self.ff):
            weights.flush()
        for l, p in enumerate(self.ff):
            p.seen = -1
            if p.spiking:
                p.reproject(weights.WT[l])
        for l, p in enumerate(self.fb):
            p.seen = -1
            if p.spiking:
                p.reproject(weights.YT[l])


class Simulator:
    """Runs phases on a :class:`State` with given :class:`Weights` and :class:`Config`."""

    def __init__(self, cfg: Config, dtype=np.float32):
        validate(cfg)
        self.cfg = cfg
        self.dtype = np.dtype(dtype)
        mem = cfg.mem
        kappa = psp_kernel(mem, cfg.tau_s, cfg.tau_L, np.float64)
        # kappa_slot[lag][g % mem] = weights of ring slots for a PSP read at step g
        self._kappa_slot = {}
        for lag in (0, 1):
            table = np.zeros((mem, mem))
            for pos in range(mem):
                newest = (pos - lag) % mem
                for age in range(mem):
                    table[pos, (newest - age) % mem] = kappa[age]
            self._kappa_slot[lag] = table.astype(self.dtype)
        self.kappa = kappa
        self._psp_cache = {}

    # -- helpers ---------------------------------------------------------

    def _sample(self, src: _Source, slot, streams, rates, p0=None):
        u = streams.uniform(rates.shape).astype(rates.dtype, copy=False)
        S = poisson_from_uniform(rates, u, p0)
        src.hist[slot] = S
        return S

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
        """
        cfg, dt = self.cfg, self.dtype
        nL = cfg.n_layers
        B = st.B
        mem = cfg.mem
        start = L_phase - T + 1
        C_sum = [np.zeros_like(c) for c in st.C]
        A_sum = [np.zeros_like(a) for a in st.A] if collect_A else None
        lam_sum = np.zeros_like(st.C[-1]) if collect_lam else None
        need_fb_psp = collect_psp and cfg.update_feedback_weights
        psp_ff = [np.zeros((B, cfg.sizes[l]), dt) for l in range(nL)] if collect_psp else None
        psp_fb = [np.zeros((B, cfg.sizes[cfg.feedback_source(l) + 1]), dt) for l in range(nL - 1)] \
            if need_fb_psp else None
        # spike-time weights of the mean PSP (spiking paths)
        psp_w = {}
        if collect_psp:
            for lag, on in ((0, cfg.use_spiking_feedforward), (1, need_fb_psp and cfg.use_spiking_feedback)):
                if on:
                    off, wv = self._psp_weights(L_phase, T, lag)
                    psp_w[lag] = (off, wv.astype(dt))
                    # history spikes (phase steps j <= 0) enter once, now
                    g0 = st.step  # the last simulated global step = phase step 0
                    hist_w = np.zeros(mem, dt)
                    for age in range(mem):
                        j = -age
                        if j - off >= 0:
                            hist_w[(g0 - age) % mem] = wv[j - off]
                    if hist_w.any():
                        pathways = st.ff if lag == 0 else st.fb
                        targets = psp_ff if lag == 0 else psp_fb
                        for l, p in enumerate(pathways):
                            if lag == 1 and l >= nL - 1:
                                continue
                            H = p.source.hist
                            targets[l] += np.tensordot(hist_w, H, axes=1)
        if plateau_end is not None:
            plateau_start = [pe - T + 1 for pe in plateau_end]
        teach = None
        if target is not None:
            gE = target.astype(dt)
            gI = 1 - gE
            teach = (gE * dt.type(cfg.E_E) + gI * dt.type(cfg.E_I), gE + gI)
        g_L, g_D = dt.type(cfg.g_L), dt.type(cfg.g_D)
        k_B, k_D = dt.type(cfg.k_B), dt.type(cfg.k_D)
        spiking_any = cfg.use_spiking_feedforward or cfg.use_spiking_feedback
        half, half_lam = dt.type(0.5), dt.type(cfg.lambda_max / 2)
        sdt = cfg.dt
        keep_h = dt.type(1 - sdt * (cfg.g_L + cfg.g_B + cfg.g_A_eff))
        keep_o = dt.type(1 - sdt * (cfg.g_L + cfg.g_D))
        keep_t = dt.type(1 - sdt * (cfg.g_L + cfg.g_D + 1.0))  # g_E + g_I = 1
        gain_h, gain_A = dt.type(sdt * cfg.g_B), dt.type(sdt * cfg.g_A_eff)
        teach_dt = None if teach is None else teach[0] * dt.type(sdt)
        bias_gain = [gain_h * b for b in w.b] if cfg.use_conductances else None
        in_src = st.sources[0]
        changed_phase = True  # output's formula changes at every phase start
        t = 1
        while t <= L_phase:
            st.step += 1
            g = st.step
            slot = g % mem
            anything = changed_phase or cfg.use_conductances or spiking_any
            in_window = t >= start
            if cfg.use_spiking_feedforward:
                if in_src.p0 is None:  # input fixed for the example: exp(-rate) once
                    np.maximum(in_src.rates, 0, out=in_src.rates)
                    in_src.p0 = np.exp(-in_src.rates)
                S = self._sample(in_src, slot, streams, in_src.rates, in_src.p0)
                st.ff[0].project(w.WT[0], slot, S)
                if collect_psp:
                    off, wv = psp_w[0]
                    if 0 <= t - off < wv.size and wv[t - off] != 0:
                        psp_ff[0] += wv[t - off] * S
            for l in range(nL):
                hidden = l < nL - 1
                src = st.sources[l + 1]
                # basal / dendritic drive
                p = st.ff[l]
                drive_changed = False
                if p.spiking:
                    np.dot(self._kappa_slot[0][slot], p.proj.reshape(mem, -1), out=p.drive.reshape(-1))
                    drive_changed = True
                elif p.seen != p.source.version:
                    np.matmul(p.source.rates, w.WT[l], out=p.drive)
                    pend = w.pending[l]
                    if pend is not None and pend.m:
                        p.drive += (p.source.rates @ pend.P[:pend.m].T) @ pend.Q[:pend.m]
                    p.drive += w.b[l]
                    p.seen = p.source.version
                    drive_changed = True
                if collect_psp and not p.spiking and in_window:
                    psp_ff[l] += p.source.rates
                if hidden and st.apical:
                    q = st.fb[l]
                    if q.spiking:
                        np.dot(self._kappa_slot[1][slot], q.proj.reshape(mem, -1), out=st.A[l].reshape(-1))
                        if w.c[l] is not None:
                            st.A[l] += w.c[l]
                        anything = True
                    elif q.seen != q.source.version:
                        np.matmul(q.source.rates, w.YT[l], out=st.A[l])
                        if w.c[l] is not None:
                            st.A[l] += w.c[l]
                        q.seen = q.source.version
                        anything = True
                    if need_fb_psp and in_window and not q.spiking:
                        psp_fb[l] += q.source.rates
                # soma
                C = st.C[l]
                Bd = p.drive  # rate mode: includes b; spike mode: b added below
                C_changed = False
                if cfg.use_conductances:
                    # C <- C + dt (-g_L C + g (B - C) [+ g_A (A - C)] [+ g_E (E_E - C) + g_I (E_I - C)])
                    if hidden:
                        C *= keep_h
                        C += gain_h * Bd
                        if cfg.use_apical_conductance:
                            C += gain_A * st.A[l]
                    else:
                        C *= keep_o if teach is None else keep_t
                        C += gain_h * Bd
                        if teach is not None:
                            C += teach_dt
                    if p.spiking:
                        C += bias_gain[l]
                    C_changed = True
                elif drive_changed or (not hidden and changed_phase):
                    if p.spiking:
                        Bd = Bd + w.b[l]
                    if hidden:
                        np.multiply(Bd, k_B, out=C)
                    elif teach is None:
                        np.multiply(Bd, k_D, out=C)
                    else:
                        np.divide(g_D * Bd + teach[0], g_L + g_D + teach[1], out=C)
                    C_changed = True
                if C_changed:
                    anything = True
                    r = src.rates  # lambda_max * sigmoid(C) = lambda_max/2 (1 + tanh(C/2)), in place
                    np.multiply(C, half, out=r)
                    np.tanh(r, out=r)
                    r *= half_lam
                    r += half_lam
                    src.version += 1
                if src.hist is not None:
                    S = self._sample(src, slot, streams, src.rates)
                    for l2 in range(l + 1, nL):
                        if st.ff[l2].source is src and st.ff[l2].spiking:
                            st.ff[l2].project(w.WT[l2], slot, S)
                            if collect_psp:
                                off, wv = psp_w[0]
                                if 0 <= t - off < wv.size and wv[t - off] != 0:
                                    psp_ff[l2] += wv[t - off] * S
                    for l2 in range(nL - 1 if st.apical else 0):
                        q = st.fb[l2]
                        if q.source is src and q.spiking:
                            q.project(w.YT[l2], slot, S)
                            if need_fb_psp:
                                off, wv = psp_w[1]
                                if 0 <= t - off < wv.size and wv[t - off] != 0:
                                    psp_fb[l2] += wv[t - off] * S
            # window sums
            if not anything and t > 1:
                # nothing changed in this whole step: the remaining steps repeat it exactly
                self._fast_forward(st, t, L_phase, start, C_sum, A_sum, lam_sum, psp_ff, psp_fb,
                                   plateau_end, plateau_start if plateau_end is not None else None)
                st.step += L_phase - t
                break
            if in_window:
                for l in range(nL):
                    C_sum[l] += st.C[l]
                if collect_lam:
                    lam_sum += st.sources[nL].rates
            if collect_A:
                for l in range(nL - 1):
                    if plateau_end is None:
                        if in_window:
                            A_sum[l] += st.A[l]
                    else:
                        m = (plateau_start[l] <= t) & (plateau_end[l] >= t)
                        A_sum[l] += st.A[l] * m
            changed_phase = False
            t += 1
        inv = dt.type(1.0 / T)
        out = {"C": [s * inv for s in C_sum]}
        if collect_A:
            out["A"] = [s * inv for s in A_sum]
        if collect_lam:
            out["lam_out"] = lam_sum * inv
        if collect_psp:
            for l in range(nL):
                if not cfg.use_spiking_feedforward:
                    psp_ff[l] *= inv
            out["psp_ff"] = psp_ff
            if need_fb_psp:
                if not cfg.use_spiking_feedback:
                    for x in psp_fb:
                        x *= inv
                out["psp_fb"] = psp_fb
        return out

    def _fast_forward(self, st, t, L_phase, start, C_sum, A_sum, lam_sum, psp_ff, psp_fb,
                      plateau_end, plateau_start):
        """Add the window contributions of steps ``t .. L_phase`` (all equal to step t)."""
        nL = self.cfg.n_layers
        n_win = L_phase - max(t, start) + 1
        if n_win > 0:
            f = self.dtype.type(n_win)
            for l in range(nL):
                C_sum[l] += f * st.C[l]
            if lam_sum is not None:
                lam_sum += f * st.sources[nL].rates
            if psp_ff is not None:
                for l in range(nL):
                    if t >= start:  # this step's rates were already added once
                        psp_ff[l] += (f - 1) * st.ff[l].source.rates
                    else:
                        psp_ff[l] += f * st.ff[l].source.rates
            if psp_fb is not None:
                for l in range(nL - 1):
                    if t >= start:
                        psp_fb[l] += (f - 1) * st.fb[l].source.rates
                    else:
                        psp_fb[l] += f * st.fb[l].source.rates
            if A_sum is not None and plateau_end is None:
                for l in range(nL - 1):
                    A_sum[l] += f * st.A[l]
        if A_sum is not None and plateau_end is not None:
            for l in range(nL - 1):
                lo = np.maximum(plateau_start[l], t)
                cnt = np.clip(plateau_end[l] - lo + 1, 0, None).astype(self.dtype)
                A_sum[l] += cnt * st.A[l]

    # -- training ----------------------------------------------------------

    def set_input(self, st: State, X):
        """Present inputs ``X`` (B, n_in), pixel values in [0, 1]: rates ``lambda_max * X``."""
        src = st.sources[0]
        np.multiply(X, self.dtype.type(self.cfg.lambda_max), out=src.rates)
        src.version += 1
        src.p0 = None

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
        fwd = self.run_phase(st, w, Lf, T, streams=streams, plateau_end=pe_f, collect_psp=True)
        tgt = self.run_phase(st, w, Lt, T, target=targets, streams=streams, plateau_end=pe_t,
                             collect_lam=True)
        lam_max = dt.type(cfg.lambda_max)
        f_etas = cfg.f_etas if f_etas is None else f_etas
        b_etas = cfg.b_etas if b_etas is None else b_etas
        if cfg.use_backprop or cfg.use_symmetric_weights or cfg.use_spiking_feedforward:
            w.flush()  # these read WT directly
        # errors (all from the weights the examples were simulated with)
        E = [None] * nL
        sC = sigmoid(fwd["C"][-1])
        diff = tgt["lam_out"] - lam_max * sC
        E[-1] = -diff * (dt.type(cfg.k_D) * lam_max) * sC * (1 - sC)
        loss = float(np.vdot(diff, diff)) / B
        alpha_f = [sigmoid(a) for a in fwd["A"]]
        for l in range(nL - 2, -1, -1):
            sC = sigmoid(fwd["C"][l])
            slope = (dt.type(cfg.k_B) * lam_max) * sC * (1 - sC)
            if cfg.use_backprop:
                E[l] = (E[l + 1] @ w.WT[l + 1].T) * slope
            else:
                E[l] = -(sigmoid(tgt["A"][l]) - alpha_f[l]) * slope
        E_inv = None
        if cfg.update_feedback_weights:
            E_inv = [None] * (nL - 1)
            for l in range(nL - 1):
                sA = alpha_f[l]
                E_inv[l] = -(lam_max * sigmoid(fwd["C"][l]) - sA) * sA * (1 - sA)
        finite = np.isfinite(loss) and all(np.isfinite(np.vdot(e, e)) for e in E[:-1])
        if not finite:
            return loss, False
        # apply the mean of the B per-example updates
        defer = B == 1 and not (cfg.use_spiking_feedforward or cfg.use_backprop or cfg.use_symmetric_weights)
        for l in range(nL):
            scale = f_etas[l] * (cfg.P_final if l == nL - 1 else cfg.P_hidden)
            if defer and w.WT[l].size >= DEFER_MIN_SIZE:
                w.defer(l, fwd["psp_ff"][l], E[l], dt.type(-scale))
            else:
                w.flush(l)
                rank_update(w.WT[l], fwd["psp_ff"][l], E[l], -scale / B)
            w.b[l] -= dt.type(scale) * (E[l][0] if B == 1 else E[l].mean(axis=0))
        if E_inv is not None:
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
