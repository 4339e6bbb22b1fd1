"""Vectorised simulation core of the segregated-dendrite network.

NumPy arrays and one compiled step loop (:mod:`._kernel`, numba):
knows nothing of scikit-learn, optuna or files. The estimator in
:mod:`bioplaus.models.segdend.estimator` wraps it. Parameter names mirror the paper and
its reference code (``l_f_phase``, ``lambda_max``, ``g_B`` ...); the
equations are those of Guerguiev, Lillicrap & Richards (2017), "Towards deep
learning with segregated dendrites", eLife 6:e22901 (Methods), as the
published code implements them.

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
applied every ``DEFER_RANK`` examples by one matrix product. Little Python
runs per training example: its two phases are one compiled call
(``_kernel.two_phases``), and at batch 1 its errors and updates are another
(``_kernel.online_step``).

Alignment record (on request only, :meth:`Simulator.train_batch`'s
``alignment``): per batch, the angle between each hidden layer's applied
weight update and the one the ``use_backprop`` control would have applied
from the same simulated phases (:func:`update_angles`), formed from the
batch's errors and mean PSPs without a second simulation, a random draw or a
weight change.

Random streams are injectable (:class:`RandomStreams`); the order of draws is:
per training batch (1) phase lengths if random (forward, then target),
(2) plateau offsets if random (forward phase for every hidden layer bottom-up,
then target phase); per time step the spike uniforms (numbers of the streams'
SplitMix64 sequence), input first then layers bottom-up, for every source whose spikes are consumed (input: spiking
feedforward; hidden layer: spiking feedforward, or spiking feedback and it is a
feedback source; output: spiking feedback and there is a hidden layer); after
each update, for noisy symmetric feedback, one normal draw per hidden layer from
the top down, shaped like ``W_{l+1}.T`` (one number without broadcast).
"""

from __future__ import annotations

import math

import numpy as np

from bioplaus.models.segdend import _kernel, _noise
from bioplaus.models.segdend.config import (
    PLATEAU_OFFSET_MAX, PLATEAU_OFFSET_SD, UNIFORM_BLOCK, WALD_MEAN, WALD_SCALE, Config, validate,
)
from bioplaus.models.segdend.config import NOISY_SYMMETRIC_SD, SPARSE_GAIN
from bioplaus.models.segdend import state as _state
from bioplaus.models.segdend.state import State, Weights, padded, rank_update

_NO_KEY = np.uint64(0)  # the spike key argument when uniforms come from an array


def sigmoid(x):
    """Logistic function, overflow-free (``0.5 + 0.5 tanh(x / 2)``)."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def psp_kernel(mem, tau_s, tau_L, dtype=np.float64):
    """``kappa(u) = (exp(-u/tau_L) - exp(-u/tau_s)) / (tau_L - tau_s)`` for u = 1..mem (steps)."""
    u = np.arange(1, mem + 1, dtype=np.float64)
    return ((np.exp(-u / tau_L) - np.exp(-u / tau_s)) / (tau_L - tau_s)).astype(dtype)


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


def update_angles(psp, E_rule, E_ref):
    """Per layer, the angle in degrees between the weight updates ``psp[l]^T @ E_rule[l]`` and
    ``psp[l]^T @ E_ref[l]`` (each summed over the batch's B rows); NaN where one is zero or not finite.

    Every update of this model is ``-(f_eta P / B) psp^T E`` (Guerguiev, Lillicrap & Richards
    2017, Methods): a positive factor shared by both, which leaves the angle unchanged and is left
    out. Inner products of the (n_in, n_l) matrices come from B x B products,
    ``<x^T a, x^T b>_F = sum((x x^T) * (a b^T))``, in float64.
    """
    out = np.full(len(E_ref), np.nan)
    for l, (x, a, b) in enumerate(zip(psp, E_rule, E_ref)):
        x, a, b = (np.asarray(v, dtype=np.float64) for v in (x, a, b))
        K = x @ x.T
        ab, aa, bb = (float(np.sum(K * (p @ q.T))) for p, q in ((a, b), (a, a), (b, b)))
        if aa > 0 and bb > 0:
            denom = math.sqrt(aa) * math.sqrt(bb)
            if math.isfinite(denom) and math.isfinite(ab) and denom > 0:
                out[l] = math.degrees(math.acos(min(1.0, max(-1.0, ab / denom))))
    return out


class RandomStreams:
    """Every random draw of a simulation (injectable so two simulators can share them).

    Spike uniforms come from one SplitMix64 stream (Steele, Lea & Flood 2014)
    seeded from ``rng``: number ``i`` of the stream is a pure function of
    ``(spike_key, i)``, so the compiled simulator generates them where they are
    used and any grouping of draws gives the same numbers. float32 streams
    carry 24 random bits per uniform, float64 streams 53. Normal numbers (the
    noise of noisy symmetric feedback) come from the same key's outputs from
    2^63 on (:mod:`._noise`), counted by ``normal_counter``.
    """

    def __init__(self, rng: np.random.Generator, dtype=np.float32):
        self.rng, self.dtype = rng, np.dtype(dtype)
        self.spike_key = np.uint64(rng.integers(0, 2**64, dtype=np.uint64))
        self.spike_counter = 0  # uniforms used so far
        self.spike_bits = 24 if self.dtype == np.float32 else 53
        self.normal_counter = 0  # normal numbers used so far

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__.setdefault("normal_counter", 0)  # pickled before normals came from the key

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

    def normal_added(self, scale, M):
        """``M + normal(scale, M.shape)`` in ``M``'s dtype (the normals rounded to it first, as
        ``M + normal(...).astype(M.dtype)`` gives), without a float64 temporary."""
        out = np.empty(M.shape, M.dtype)
        _noise.fill_normal(self.spike_key, self.normal_counter, float(scale), out.reshape(-1))
        self.normal_counter += out.size
        np.add(M, out, out=out)
        return out

    def normal(self, scale, shape):
        """The next ``prod(shape)`` numbers of N(0, ``scale``^2), float64, in C order (:mod:`._noise`)."""
        out = np.empty(shape, np.float64)
        _noise.fill_normal(self.spike_key, self.normal_counter, float(scale), out.reshape(-1))
        self.normal_counter += out.size
        return out


class _SymmetricNoise:
    """The N(0, 0.05^2) noise of noisy symmetric feedback from ``streams`` (:meth:`Weights.impose_symmetry`):
    ``noise(shape)`` (float64 numbers), and ``noise.added_to(M)`` (``M`` plus as many, in ``M``'s dtype)."""

    def __init__(self, streams: RandomStreams):
        self.streams = streams

    def __call__(self, shape):
        return self.streams.normal(NOISY_SYMMETRIC_SD, shape)

    def added_to(self, M):
        return self.streams.normal_added(NOISY_SYMMETRIC_SD, M)


class Simulator:
    """Runs phases on a :class:`State` with given :class:`Weights` and :class:`Config`."""

    def __init__(self, cfg: Config, dtype=np.float32):
        validate(cfg)
        self.cfg = cfg
        self.dtype = np.dtype(dtype)
        mem = cfg.mem
        self.kappa = psp_kernel(mem, cfg.tau_s, cfg.tau_L, np.float64)
        # PSP traces (see _kernel._project_traced)
        d_L, d_s = math.exp(-1.0 / cfg.tau_L), math.exp(-1.0 / cfg.tau_s)
        self._decay = _kernel.pack(_kernel.DECAY_NAMES, dict(
            d_L=d_L, d_L_mem=d_L ** (mem + 1), d_s=d_s, d_s_mem=d_s ** (mem + 1),
            inv_dtau=1.0 / (cfg.tau_L - cfg.tau_s)), self.dtype)
        self._psp_cache = {}
        # constants of the compiled step loop (see _kernel.phase_steps)
        self._consts = _kernel.pack(_kernel.CONST_NAMES, dict(
            keep_h=1 - cfg.dt * (cfg.g_L + cfg.g_B + cfg.g_A_eff),
            keep_o=1 - cfg.dt * (cfg.g_L + cfg.g_D),
            keep_t=1 - cfg.dt * (cfg.g_L + cfg.g_D + 1.0),  # g_E + g_I = 1
            gain_h=cfg.dt * cfg.g_B, gain_A=cfg.dt * cfg.g_A_eff, k_B=cfg.k_B, k_D=cfg.k_D, g_D=cfg.g_D,
            g_L=cfg.g_L, lambda_max=cfg.lambda_max, one=1.0, E_E=cfg.E_E, E_I=cfg.E_I, dt=cfg.dt), self.dtype)
        self._fb_src = np.array([cfg.feedback_source(l) for l in range(cfg.n_layers - 1)] or [0], np.int64)
        self._dummy1, self._dummy2 = np.zeros(0, self.dtype), np.zeros((1, 1), self.dtype)
        self._error_consts = _kernel.pack(_kernel.ERROR_CONST_NAMES, dict(
            k_B=cfg.k_B, k_D=cfg.k_D, lambda_max=cfg.lambda_max), self.dtype)
        self._no_plateau = padded([], cfg.n_layers, np.zeros((1, 1), np.int64), -1)
        self._no_history = np.zeros(cfg.mem, self.dtype)
        self._mode_cache, self._scale_cache = {}, {}
        self._lambda_max = self.dtype.type(cfg.lambda_max)
        self._sum_bound = float(np.finfo(self.dtype).max) / 2  # see _kernel.sum_is_finite
        # the compiled loop's spike-time PSP weights when no spike is consumed (rate mode)
        self._no_psp = (self._dummy1, 0, self._dummy1, 0, self._no_history, self._no_history)

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
        (:mod:`._kernel`).
        """
        return dict(self._simulate(st, w, L_phase, T, target, streams, plateau_end, collect_psp, collect_A,
                                   collect_lam)[1])

    def _simulate(self, st, w, L_phase, T, target, streams, plateau_end, collect_psp, collect_A, collect_lam):
        """:meth:`run_phase`, returning ``(sums, out)``: the window means as the compiled loop's
        tuples (C, A, lam_out, psp_ff, psp_fb; placeholders where not collected) and as a dict."""
        cfg, dt = self.cfg, self.dtype
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
        self._input_spike_odds(st)
        psp_args = self._psp_args(st, L_phase, T, collect_psp, need_fb_psp)
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
            step, done = _kernel.phase_steps(t, t_last, L_phase, start, step, *head, *sums, U, 0, _NO_KEY, 0,
                                             u_off, per_step, *psp_args)
            if done:
                break
            t = t_last + 1
        st.step = step
        return sums, out

    def _input_spike_odds(self, st):
        """Spiking feedforward: ``exp(-rate)`` of the input, once per example (the input is fixed)."""
        if self.cfg.use_spiking_feedforward and not st.p0_valid:
            src = st.sources[0]
            np.maximum(src.rates, 0, out=src.rates)
            np.negative(src.rates, out=st.p0)
            np.exp(st.p0, out=st.p0)
            st.p0_valid = True

    def _psp_args(self, st, L_phase, T, collect_psp, need_fb_psp):
        """The compiled loop's spike-time weights of the mean PSPs (spiking paths) for a phase of
        ``L_phase`` steps starting after step ``st.step``, and those of the ring's spikes before it."""
        cfg = self.cfg
        if not ((collect_psp and cfg.use_spiking_feedforward) or (need_fb_psp and cfg.use_spiking_feedback)):
            return self._no_psp
        mem = cfg.mem
        psp = [(0, self._dummy1, self._no_history)] * 2
        for lag, on in ((0, collect_psp and cfg.use_spiking_feedforward),
                        (1, need_fb_psp and cfg.use_spiking_feedback)):
            if on:
                off, wv = self._psp_weights(L_phase, T, lag)
                hist_w = np.zeros(mem, self.dtype)
                for age in range(mem):  # ring slot of phase step -age (step 0 = the last simulated)
                    if -age - off >= 0:
                        hist_w[(st.step - age) % mem] = wv[-age - off]
                psp[lag] = (off, wv, hist_w)
        return (psp[0][1], psp[0][0], psp[1][1], psp[1][0], psp[0][2], psp[1][2])

    def _two_phases(self, st, w, Lf, Lt, T, targets, streams):
        """The forward and target phases of a training example in one compiled call (the same
        numbers as :meth:`_simulate` twice): for fixed plateau times and uniforms from the streams'
        key (or none). Returns the forward phase's ``(sums, out)`` and the target phase's sums."""
        cfg = self.cfg
        need_fb_psp = cfg.update_feedback_weights
        head_f, sums_f, out_f = self._phase_arrays(st, w, (False, True, False, True, need_fb_psp, False))
        head_t, sums_t, _ = self._phase_arrays(st, w, (True, True, True, False, False, False))
        np.copyto(st.target, targets)  # (read by the target phase only)
        self._input_spike_odds(st)
        psp_f = self._psp_args(st, Lf, T, True, need_fb_psp)
        per_step = st.u_per_step
        if per_step:
            u_start, key, bits = streams.spike_counter, streams.spike_key, streams.spike_bits
            streams.spike_counter += (Lf + Lt) * per_step
        else:
            u_start, key, bits = 0, _NO_KEY, 0
        st.step = _kernel.two_phases(Lf, Lt, Lf - T + 1, Lt - T + 1, st.step, head_f[2], head_t[2], head_f[:2],
                                     head_f[3:], sums_f, sums_t, self._dummy1, u_start, key, bits, st.u_off,
                                     per_step, psp_f, self._no_psp)
        return sums_f, out_f, sums_t

    def _update_modes(self, w, defer):
        """Per layer, how an online update is applied (see ``_kernel.online_update``),
        the layers whose updates are queued (mode 1) and those written directly (the others)."""
        key = (defer, _state.DEFER_MIN_SIZE)
        cached = self._mode_cache.get(key)
        if cached is None or cached[0] is not w.WT:  # (a Weights' matrices keep their shapes)
            modes = np.array([(1 if defer else 0) if x.size >= _state.DEFER_MIN_SIZE else 2 for x in w.WT], np.int64)
            cached = self._mode_cache[key] = (w.WT, modes, [l for l, m in enumerate(modes) if m == 1],
                                              [l for l, m in enumerate(modes) if m != 1])
        return cached[1:]

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
        window-sum arrays and the result dict of one kind of phase; cached on the state for
        this simulator (whose configuration gives the switches and constants) and these weights."""
        ka = w.kernel_arrays()
        cached = st.phase_cache.get(switches)
        if cached is not None and cached[0] is ka and cached[1] is self:
            return cached[2:]
        cfg, dt = self.cfg, self.dtype
        nL, B, sizes = cfg.n_layers, st.B, cfg.sizes
        teach, collect_A, collect_lam, collect_psp, need_fb_psp, plateau = switches
        flags = _kernel.pack(_kernel.FLAG_NAMES, dict(
            spiking_ff=cfg.use_spiking_feedforward, spiking_fb=cfg.use_spiking_feedback and st.apical,
            conductances=cfg.use_conductances, apical_conductance=cfg.use_apical_conductance,
            apical=st.apical, teach=teach, collect_A=collect_A, collect_lam=collect_lam,
            collect_psp=collect_psp, need_fb_psp=need_fb_psp, plateau=plateau), np.int64, extra=st.spiking_src)
        d2 = self._dummy2
        pad_int = self._no_plateau[0]
        pl = ((padded(st.plateau_start, nL, pad_int, -1), padded(st.plateau_end, nL, pad_int, -1)) if plateau
              else (self._no_plateau,) * 2)
        head = (cfg.mem, nL, flags, self._fb_src, self._consts, self._decay,
                *ka, *st.kernel_arrays, st.target, *pl)
        if cached is not None:  # same state, new weight arrays or configuration: keep the sums
            sums, out = cached[3], cached[4]
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
        st.phase_cache[switches] = (ka, self, head, sums, out)
        return head, sums, out

    # -- training ----------------------------------------------------------

    def set_input(self, st: State, X):
        """Present inputs ``X`` (B, n_in), pixel values in [0, 1]: rates ``lambda_max * X``."""
        np.multiply(X, self._lambda_max, out=st.sources[0].rates)
        st.versions[0] += 1  # the input's version (``st.sources[0].version``)
        st.p0_valid = False

    def train_batch(self, st: State, w: Weights, X, targets, streams: RandomStreams,
                    f_etas=None, b_etas=None, alignment=None):
        """One forward + target phase on ``B`` examples, then the mean of their updates.

        ``X`` (B, n_in) float in [0, 1]; ``targets`` (B, n_out) 0/1 teaching
        signals. Updates ``w`` in place; returns ``(loss_out, finite)`` where
        ``loss_out`` is the mean output-layer local loss.

        ``alignment``: None (nothing extra is computed), or a list to which,
        once the batch's update is applied, the array of the angles (degrees,
        one per hidden layer) between the applied hidden weight updates and
        those ``use_backprop`` would have applied from the same simulated state
        is appended (:meth:`_backprop_hidden_errors`, :func:`update_angles`).
        Recording only reads: the weights, state and random streams end as
        without it.
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
        if pe_f is None and (st.u_per_step == 0 or hasattr(streams, "spike_key")):
            fsums, fwd, tsums = self._two_phases(st, w, Lf, Lt, T, targets, streams)
        else:
            fsums, fwd = self._simulate(st, w, Lf, T, None, streams, pe_f, True, True, False)
            tsums, _ = self._simulate(st, w, Lt, T, targets, streams, pe_t, False, True, True)
        f_etas = cfg.f_etas if f_etas is None else f_etas
        b_etas = cfg.b_etas if b_etas is None else b_etas
        if cfg.use_backprop or cfg.use_symmetric_weights or cfg.use_spiking_feedforward:
            w.flush()  # these read WT directly
        # errors (from the weights the examples were simulated with; with use_backprop the hidden
        # errors are formed again during the updates, see _backprop_updates)
        if st.errors is None:  # buffers of this state: E per layer, E_inv per hidden layer
            st.errors = (padded([np.zeros_like(c) for c in st.C], nL, self._dummy2),
                         padded([np.zeros_like(a) for a in st.A], nL, self._dummy2, -1))
        E, E_inv = st.errors
        scales = self._scales(f_etas)
        # one online example of the local rule: its errors and updates in one compiled call
        online = B == 1 and not cfg.use_backprop and alignment is None
        sums_finite = -1  # whether the sums checked at the end are finite (-1: not known yet)
        if online:
            defer = not (cfg.use_spiking_feedforward or cfg.use_symmetric_weights)
            mode, deferred, direct = self._update_modes(w, defer)
            w.ensure_pending(deferred)
            WT, b, _, _, P, Q, pending_m = w.kernel_arrays()
            w.touched(direct)  # the queued layers (mode 1) change only by flushes
            loss, finite, sums_finite = _kernel.online_step(
                nL, fsums[0], fsums[1], tsums[1], tsums[2], WT, self._error_consts, cfg.update_feedback_weights,
                E, E_inv, b, fsums[3], scales, mode, P, Q, pending_m, st.sources[-1].rates, self._sum_bound)
        else:
            WT, b, _, _, P, Q, pending_m = w.kernel_arrays()
            loss, finite = _kernel.local_errors(nL, fsums[0], fsums[1], tsums[1], tsums[2], WT, self._error_consts,
                                                cfg.use_backprop, cfg.update_feedback_weights, E, E_inv)
        if not finite:
            return loss, False
        # apply the mean of the B per-example updates
        if alignment is not None:  # the control's hidden errors, before any weight moves
            bp_errors = self._backprop_hidden_errors(w, fsums[0], fwd["psp_ff"], E, scales, B)
        # what changed in each matrix, for the spike rings' projections (State.reproject)
        psp_ff = fwd["psp_ff"]
        changes = {}
        if cfg.use_backprop:
            w.touched()
            self._backprop_updates(w, fsums[0], psp_ff, E, scales, B)
            changes.update({("ff", l): [(psp_ff[l], E[l], -scales[l] / B)] for l in range(nL)})
        elif B == 1:  # online rule: small updates compiled, large ones queued as low-rank sums or by BLAS
            if not online:  # (with an alignment record: its angles were formed before any weight moved)
                defer = not (cfg.use_spiking_feedforward or cfg.use_symmetric_weights)
                mode, deferred, direct = self._update_modes(w, defer)
                if w.ensure_pending(deferred):
                    WT, b, _, _, P, Q, pending_m = w.kernel_arrays()
                w.touched(direct)
                _kernel.online_update(nL, WT, b, fsums[3], E, scales, mode, P, Q, pending_m)
            track = st.projects_spikes  # (rate mode: reproject reads no changes)
            for l in range(nL):
                if mode[l] == 0:
                    rank_update(w.WT[l], psp_ff[l], E[l], -scales[l])
                elif mode[l] == 1 and pending_m[l] == _state.DEFER_RANK:
                    w.flush(l)
                if track:
                    changes[("ff", l)] = [(psp_ff[l], E[l], -scales[l])]
        else:
            w.touched()
            for l in range(nL):
                w.flush(l)
                rank_update(w.WT[l], psp_ff[l], E[l], -scales[l] / B)
                w.b[l] -= scales[l] * E[l].mean(axis=0)
                changes[("ff", l)] = [(psp_ff[l], E[l], -scales[l] / B)]
        if cfg.update_feedback_weights:
            for l in range(nL - 1):
                rank_update(w.YT[l], fwd["psp_fb"][l], E_inv[l], -b_etas[l] / B)
                changes[("fb", l)] = [(fwd["psp_fb"][l], E_inv[l], -b_etas[l] / B)]
                if w.c[l] is not None:
                    w.c[l] -= dt.type(b_etas[l]) * E_inv[l].mean(axis=0)
                if w.masks[l] is not None and not cfg.use_symmetric_weights:
                    # the reference re-imposes the sparse mask after every feedback update, survivors
                    # times 5 each time (so they grow 5-fold per example)
                    w.YT[l] *= w.masks[l] * SPARSE_GAIN
                    changes[("fb", l)] = _state.CHANGED
        if alignment is not None:  # E now holds the hidden errors the update used (either rule)
            alignment.append(update_angles(fwd["psp_ff"][:nL - 1], E[:nL - 1], bp_errors))
        if cfg.use_symmetric_weights:
            noise = None
            if cfg.noisy_symmetric_weights:
                noise = _SymmetricNoise(streams)
            w.impose_symmetry(cfg, noise)
            changes.update({("fb", l): _state.CHANGED for l in range(nL - 1)})
        st.reproject(w, changes)
        if sums_finite >= 0:  # (online: b[0] and the rates no longer change after online_step)
            return loss, bool(sums_finite)
        finite = math.isfinite(st.sources[-1].rates.sum()) and math.isfinite(w.b[0].sum())
        return loss, finite

    def _backprop_updates(self, w, C_f, psp_ff, E, scales, B):
        """Weight updates of ``use_backprop``, from the output layer down.

        As in the reference code, layer ``l + 1`` is updated before the error
        of layer ``l`` is formed, and that error backpropagates through the
        updated weights: ``E_l = (E_{l+1} @ W_{l+1}^new) k_B lam_max s'(C_l)``
        (the specification leaves open which ``W_{l+1}``). ``E`` (per layer,
        (B, n_l)) holds the local errors on entry (only the output layer's is
        used) and the errors used on return.
        """
        cfg = self.cfg
        gain = cfg.k_B * cfg.lambda_max
        for l in range(cfg.n_layers - 1, -1, -1):
            if l < cfg.n_layers - 1:
                s = sigmoid(C_f[l])
                El = E[l]
                np.dot(E[l + 1], w.WT[l + 1].T, out=El)
                El *= gain * s * (1.0 - s)
            rank_update(w.WT[l], psp_ff[l], E[l], -scales[l] / B)
            w.b[l] -= scales[l] * E[l].mean(axis=0)

    def _backprop_hidden_errors(self, w, C_f, psp_ff, E, scales, B):
        """Hidden errors ``use_backprop`` would form from this batch's state, leaving ``w`` unchanged.

        The control (:meth:`_backprop_updates`) goes from the output layer
        down and backpropagates through the layer above as already moved by
        this batch: ``W_{l+1}' = W_{l+1} - (s_{l+1} / B) E_{l+1}^T psp_{l+1}``
        and ``E_l = (E_{l+1} @ W_{l+1}') k_B lam_max s'(C_l)`` (Guerguiev,
        Lillicrap & Richards 2017, Methods, the backprop control), where the
        top error is the output layer's local one ``E_{L-1}`` (``E[-1]``,
        the same under both rules). Formed without touching a weight:
        ``E_{l+1} @ W_{l+1}'^T`` (in ``WT`` orientation) is
        ``E_{l+1} @ WT^T - (s / B) (E_{l+1} E_{l+1}^T) psp_{l+1}`` (a B x B
        product, no weight-sized temporary), and ``WT`` counts its pending
        low-rank update (``WT + P^T Q``), which is not flushed (flushing
        early would change the rounding of what is learnt). Returns a list
        of (B, n_l) arrays, hidden layers bottom-up.
        """
        cfg = self.cfg
        gain = cfg.k_B * cfg.lambda_max
        nL = cfg.n_layers
        out = [None] * (nL - 1)
        above = E[nL - 1]
        for l in range(nL - 2, -1, -1):
            back = above @ w.WT[l + 1].T
            m = int(w.pending_m[l + 1])
            if m:
                pend = w.pending[l + 1]
                back += (above @ pend.Q[:m].T) @ pend.P[:m]
            back -= (scales[l + 1] / B) * ((above @ above.T) @ psp_ff[l + 1])
            s = sigmoid(C_f[l])
            out[l] = above = back * (gain * s * (1.0 - s))
        return out

    # -- testing -----------------------------------------------------------

    def test_state(self, n):
        """A new state for testing ``n`` rows side by side (:meth:`output_scores`)."""
        cfg = self.cfg
        return State(cfg, n, self.dtype, apical=cfg.use_conductances and cfg.use_apical_conductance)

    def output_scores(self, w: Weights, X, streams: RandomStreams | None, state: State | None = None,
                      max_state_bytes=None):
        """Mean output somatic potential over the test window, ``(n, n_out)``.

        Voltages and spike histories are cleared before each example (a fresh
        state per call, or ``state``, one of :meth:`test_state` for ``n`` rows,
        cleared: the same numbers; the returned array then belongs to it and is
        overwritten by its next use); all rows are simulated side by side,
        drawing their spike uniforms as one batch of ``n`` rows. Testing keeps
        no state between rows, so when a state of ``n`` rows would take more
        than ``max_state_bytes`` (None: no bound) the rows are simulated in
        groups whose state fits (``state`` is then not used), each group reading
        the uniforms its rows read in the whole batch
        (:meth:`State.use_spike_layout`): the same spikes, and the same scores
        to the last bit when every simulated pathway spikes. A pathway driven by
        rates is a BLAS product, whose rounding depends on the number of rows
        (float32: a few units in the last place of the scores, ~1e-6 of their
        size). Only a state with spike rings exceeds a bound of some MiB, so
        rate-mode tests are never grouped. A stream without ``spike_key`` (one
        that only offers ``uniform``) is drawn in order, so its rows are
        simulated side by side whatever the bound.
        """
        cfg = self.cfg
        w = w.applied()  # pending updates read, not applied: testing leaves training as it is
        apical = cfg.use_conductances and cfg.use_apical_conductance
        n = X.shape[0]
        group = n
        if max_state_bytes is not None and n > 1:
            per_row = max(1, State(cfg, 1, self.dtype, apical=apical).nbytes())
            group = int(min(n, max(1, int(max_state_bytes) // per_row)))
            if group < n and streams is not None and not hasattr(streams, "spike_key"):
                group = n
        if group >= n:
            return self._test_rows(w, X, streams, apical, n, 0, state)
        u_start = getattr(streams, "spike_counter", 0)
        out = None
        for a in range(0, n, group):
            if streams is not None:
                streams.spike_counter = u_start  # each group reads its rows' numbers of the whole batch
            C = self._test_rows(w, X[a:a + group], streams, apical, n, a)
            if out is None:
                out = np.empty((n, C.shape[1]), C.dtype)
            out[a:a + group] = C
        return out

    def _test_rows(self, w, X, streams, apical, total_rows, first_row, state=None):
        """Scores of rows ``first_row ..`` of a test batch of ``total_rows`` rows (see :meth:`output_scores`);
        ``state``: a state of :meth:`test_state` for all of them, cleared and reused."""
        cfg = self.cfg
        if state is not None and X.shape[0] == total_rows:
            st = state
            st.clear()
        else:
            st = State(cfg, X.shape[0], self.dtype, apical=apical)
        if X.shape[0] != total_rows:
            st.use_spike_layout(total_rows, first_row)
        st.reproject(w)
        self.set_input(st, X)
        res = self.run_phase(st, w, cfg.l_f_phase_test, cfg.integration_time_test, streams=streams,
                             collect_A=False)
        return res["C"][-1]
