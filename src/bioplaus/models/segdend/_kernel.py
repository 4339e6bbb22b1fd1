"""Compiled time-step loop of the segregated-dendrite simulator (numba).

Only the simulator (:mod:`.simulator`, :mod:`.state`) calls this module: it holds the
arrays and the order of random draws; here is the per-step arithmetic of
:meth:`Simulator.run_phase`, compiled so that the step loop costs no Python
overhead. Layers are passed as tuples of arrays (index ``l`` = layer ``l``;
sources: index 0 = input, ``l + 1`` = layer ``l``) with the number of layers
``nL``. Tuples are padded with unused placeholders to one of a few lengths
(``state.padded_layers``: one less for hidden-layer tuples, one more
for sources), so that few compiled versions serve networks of every depth
(a tuple's length is part of its compiled type).

Numerics are those of the specification: a layer's rates are
``lambda_max * sigmoid(C)``; spikes are Poisson counts by inverse CDF of one
uniform per source neuron and step; spike projections ``S @ M`` skip silent
sources (spikes are sparse; example by example, the rows of the next active
sources are prefetched). Sums run in a fixed order, so results do not
depend on threads or machine load.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

#: Largest padded tuple length (layers): 6 hidden layers and the output, the study's deepest network.
PAD_LAYERS = 7

# ---------------------------------------------------------------- interface
# The simulator hands the compiled loop its switches, constants and PSP decays
# as three small packed arrays. Their slots are named here, once; the
# simulator fills them by name (:func:`pack`) and the loop reads them by name
# (numba compiles module-level integers as constants).

#: ``flags`` (int64): switches of one kind of phase, then one "spikes consumed" flag per source.
FLAG_NAMES = ("spiking_ff", "spiking_fb", "conductances", "apical_conductance", "apical", "teach",
              "collect_A", "collect_lam", "collect_psp", "need_fb_psp", "plateau")
(F_SPIKING_FF, F_SPIKING_FB, F_CONDUCTANCES, F_APICAL_CONDUCTANCE, F_APICAL, F_TEACH, F_COLLECT_A,
 F_COLLECT_LAM, F_COLLECT_PSP, F_NEED_FB_PSP, F_PLATEAU) = range(len(FLAG_NAMES))
#: ``flags[F_SPIKING_SRC + i]``: spikes of source ``i`` (0 = input, ``l + 1`` = layer ``l``) are consumed.
F_SPIKING_SRC = len(FLAG_NAMES)
#: ``consts``: per-step leak factors and gains of the compartments, the rate scale, reversal potentials.
CONST_NAMES = ("keep_h", "keep_o", "keep_t", "gain_h", "gain_A", "k_B", "k_D", "g_D", "g_L", "lambda_max",
               "one", "E_E", "E_I", "dt")
(C_KEEP_H, C_KEEP_O, C_KEEP_T, C_GAIN_H, C_GAIN_A, C_K_B, C_K_D, C_G_D, C_G_L, C_LAMBDA_MAX, C_ONE, C_E_E,
 C_E_I, C_DT) = range(len(CONST_NAMES))
#: ``decay``: one-step decays of the two PSP traces, the same after ``mem + 1`` steps, ``1 / (tau_L - tau_s)``.
DECAY_NAMES = ("d_L", "d_L_mem", "d_s", "d_s_mem", "inv_dtau")
D_L, D_L_MEM, D_S, D_S_MEM, D_INV_DTAU = range(len(DECAY_NAMES))
#: ``consts`` of :func:`local_errors`.
ERROR_CONST_NAMES = ("k_B", "k_D", "lambda_max")
E_K_B, E_K_D, E_LAMBDA_MAX = range(len(ERROR_CONST_NAMES))


def pack(names, values, dtype, extra=()):
    """The packed array ``[values[n] for n in names] + list(extra)`` of ``dtype``; every name required."""
    missing = [n for n in names if n not in values]
    unknown = [n for n in values if n not in names]
    if missing or unknown:
        raise KeyError(f"kernel arguments: missing {missing}, unknown {unknown}")
    return np.array([values[n] for n in names] + list(extra), dtype=dtype)


# Compiled functions are cached next to this file (or in numba's user cache
# when that is not writable): only the first process on a machine compiles.
_JIT = dict(cache=True, nogil=True, error_model="numpy")


@intrinsic
def _int32_as_float32(typingctx, x):
    """The float32 whose bits are the int32 ``x``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def _float32_as_int32(typingctx, x):
    """The int32 whose bits are the float32 ``x``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


_LOG2E = np.float32(1.4426950408889634)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # ln 2 = HI + LO
_ROUND = np.float32(12582912.0)  # 1.5 * 2**23: adding it rounds a float32 to an integer


@njit(error_model="numpy")
def _exp_float32(x):
    """``exp(x)`` in float32, vectorisable: ``x`` clamped to [-87, 87], ``x = k ln 2 + r``
    (``|r| <= ln 2 / 2``), ``exp(r)`` by its degree-7 polynomial, ``2^k`` from exponent
    bits. Relative error below 2e-7 (about 2 ulp); NaN gives NaN."""
    x = np.float32(-87.0) if x < np.float32(-87.0) else x  # NaN stays NaN (divergence is detected)
    x = np.float32(87.0) if x > np.float32(87.0) else x
    t = x * _LOG2E + _ROUND
    k = _float32_as_int32(t) - _float32_as_int32(_ROUND)
    kf = t - _ROUND
    r = x - kf * _LN2_HI - kf * _LN2_LO
    # (exp(r) - 1 - r) / r^2 by a degree-5 polynomial; coefficients of Cephes' expf (S. Moshier)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    return p * _int32_as_float32((k + np.int32(127)) << np.int32(23))


def _exp_neg_of(x):
    """``exp(-x)``: the vectorisable float32 version for float32, the library's otherwise."""


@overload(_exp_neg_of)
def _exp_neg_of_impl(x):
    if x == types.float32:
        return lambda x: _exp_float32(-x)
    return lambda x: math.exp(-x)


@njit(inline="always")
def _rate(x, lam_max, one):
    """``lam_max * sigmoid(x)``, branch-free (``exp(-x)`` is large for very negative x: 0).

    ``one`` is 1 in the arrays' dtype, so float32 stays float32."""
    return lam_max / (one + _exp_neg_of(x))


@njit(inline="always")
def _splitmix(key, i):
    """Output ``i`` (0-based) of the SplitMix64 generator seeded with ``key`` (both uint64)."""
    z = key + (i + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@intrinsic
def _f64_of_bits(typingctx, x):
    """The float64 whose IEEE-754 bit pattern is the uint64 ``x`` (a reinterpretation, no rounding)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.uint64), codegen


@njit(inline="always")
def _top53(z):
    """``(z >> 11) 2^-53`` exactly (float64), for the uint64 ``z``: ``k 2^-52`` for its top 52 bits
    ``k`` by setting them as the mantissa of 1.0 (``1 + k 2^-52``, minus 1), plus ``2^-53`` times
    bit 11 of ``z``. Exact, as the integer conversion it replaces, but vectorised: AVX2 converts
    no 64-bit integers in vectors."""
    mant = _f64_of_bits((z >> np.uint64(12)) | np.uint64(0x3FF0000000000000)) - 1.0
    return mant + (1.1102230246251565e-16 if (z >> np.uint64(11)) & np.uint64(1) else 0.0)


@njit(inline="always")
def _uniform(key, i, bits):
    """Uniform in [0, 1) from the top ``bits`` (24 or 53) bits of SplitMix64 output ``i`` (float64)."""
    z = _splitmix(key, np.uint64(i))
    if bits == 24:
        return np.float64(np.int64(z >> np.uint64(40))) * 5.9604644775390625e-08
    return _top53(z)


def _uniform_like(proto, key, i, bits):
    """:func:`_uniform` in the type of ``proto`` (float32 stays float32, vectorisable)."""


@overload(_uniform_like)
def _uniform_like_impl(proto, key, i, bits):
    if proto == types.float32:
        def impl32(proto, key, i, bits):
            z = _splitmix(key, np.uint64(i))
            if bits == 24:  # exact in float32; via int32, which AVX2 converts in vectors
                return np.float32(np.int32(z >> np.uint64(40))) * np.float32(5.9604644775390625e-08)
            return np.float32(_uniform(key, i, bits))
        return impl32
    return lambda proto, key, i, bits: _uniform(key, i, bits)


@njit(**_JIT)
def fill_uniforms(key, start, bits, out):
    """``out[j]`` = uniform number ``start + j`` of the stream ``key`` (1-D ``out``)."""
    for j in range(out.size):
        out[j] = _uniform(key, start + j, bits)


@njit(inline="always")
def _poisson(lam, u, p):
    """Inverse-CDF Poisson count of mean ``lam`` for uniform ``u``; ``p = exp(-lam)``.

    Count = number of CDF values ``F(k) < u``; stops once the pmf term
    underflows (a uniform above the float CDF's limit).
    """
    if not u > p:
        return 0.0
    term = p * lam
    cdf = p + term
    k = 1
    if u > cdf:
        while True:
            k += 1
            term = term * lam / k
            cdf = cdf + term
            if not (u > cdf and term > 0):
                break
    return float(k)


@njit(**_JIT)
def poisson_counts(lam, u, out):
    """``out[i]`` = Poisson count of mean ``max(lam[i], 0)`` for uniform ``u[i]`` (1-D arrays)."""
    for i in range(lam.size):
        m = max(lam[i], 0.0)
        out[i] = _poisson(m, u[i], math.exp(-m))


@njit
def _sample(rates, p_fixed, use_p_fixed, U, base, key, bits, S, one):
    """Spike counts ``S`` (B, n) of rates (B, n); ``one`` = 1 in their dtype.

    Uniform ``j`` of the step is SplitMix64 output ``base + j`` of ``key`` when
    ``bits`` > 0, else ``U[base + j]``. ``p_fixed`` = ``exp(-rates)`` if
    ``use_p_fixed``. A first (vectorisable) pass gives counts 0, 1 and "2 or
    more" by comparing the uniform with the CDF values F(0) = p and
    F(1) = p + p lam; a second pass gives the rare larger counts by the full
    inverse CDF.
    """
    B, n = rates.shape
    zero = one - one
    for b in range(B):
        row = base + b * n
        Sb, rb = S[b], rates[b]
        if bits > 0 and use_p_fixed:  # the common cases get loops without branches
            pb = p_fixed[b]
            for i in range(n):
                u, p = _uniform_like(one, key, row + i, bits), pb[i]
                Sb[i] = (one if u > p else zero) + (one if u > p + p * rb[i] else zero)
        elif bits > 0:
            for i in range(n):
                lam = rb[i] if rb[i] > zero else zero
                u, p = _uniform_like(one, key, row + i, bits), _exp_neg_of(lam)
                Sb[i] = (one if u > p else zero) + (one if u > p + p * lam else zero)
        else:
            for i in range(n):
                lam = rb[i] if rb[i] > zero else zero
                u = U[row + i]
                p = p_fixed[b, i] if use_p_fixed else _exp_neg_of(lam)
                Sb[i] = (one if u > p else zero) + (one if u > p + p * lam else zero)
        for i in range(n):
            if Sb[i] > 1.5:  # count 2 or more (rare)
                u = _uniform_like(one, key, row + i, bits) if bits > 0 else U[row + i]
                lam = rb[i] if rb[i] > zero else zero
                p = p_fixed[b, i] if use_p_fixed else _exp_neg_of(lam)
                Sb[i] = _poisson(lam, u, p)


@intrinsic
def _prefetch_row(typingctx, M, i):
    """Ask the processor to bring row ``i`` of the C-contiguous 2-D array ``M`` into the caches
    (one prefetch per 64-byte line; no effect on any value)."""
    def codegen(context, builder, signature, args):
        from numba.core import cgutils
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], zero])
        i8p = ir.IntType(8).as_pointer()
        base = builder.bitcast(ptr, i8p)
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        nbytes = builder.mul(builder.extract_value(ary.shape, 1),
                             context.get_constant(types.intp, context.get_abi_sizeof(
                                 context.get_data_type(aryty.dtype))))
        with cgutils.for_range_slice(builder, zero, nbytes, context.get_constant(types.intp, 64)) as (off, _):
            builder.call(fn, [builder.gep(base, [off]), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.void(M, types.intp), codegen


#: Active sources ahead whose rows :func:`_project` prefetches (their rows are scattered).
PREFETCH_AHEAD = 4
#: Active rows :func:`_project` adds per pass over an example's result (the loop below names four).
ROWS_PER_PASS = 4


@njit
def _project(S, M, out, rows):
    """``out = S @ M`` for spike counts ``S`` (B, n), skipping silent sources.

    Every entry is ``0 + s_i1 M[i1, j] + s_i2 M[i2, j] + ...`` over the active
    sources in increasing order. Example by example: its active sources are
    listed first (``rows``: int scratch of at least n), then their rows of
    ``M`` are added, four per pass, to the example's row of ``out``, which
    stays in the nearest cache (each entry read and written once per four
    terms, which it gets one after the other as one at a time would), while
    the rows ``PREFETCH_AHEAD`` sources ahead are prefetched (rows are
    scattered through a matrix larger than the caches).
    Adding each active row of ``M`` once to every example that spiked on it
    (source by source) gives the same numbers, but scatters its additions over
    all of ``out``: 1.4-3x slower here for a test batch of 500 rows.
    """
    B, n = S.shape
    m = M.shape[1]
    for b in range(B):
        o, s0 = out[b], S[b]
        for j in range(m):
            o[j] = 0.0
        k = 0
        for i in range(n):  # without branches
            rows[k] = i
            k += s0[i] != 0.0
        for q in range(min(k, PREFETCH_AHEAD)):
            _prefetch_row(M, rows[q])
        q = 0
        while q + ROWS_PER_PASS <= k:  # four rows per pass over o: each entry gets their terms in order
            for r in range(q + PREFETCH_AHEAD, min(k, q + ROWS_PER_PASS + PREFETCH_AHEAD)):
                _prefetch_row(M, rows[r])
            i0, i1, i2, i3 = rows[q], rows[q + 1], rows[q + 2], rows[q + 3]
            a0, a1, a2, a3 = s0[i0], s0[i1], s0[i2], s0[i3]
            M0, M1, M2, M3 = M[i0], M[i1], M[i2], M[i3]
            for j in range(m):
                x = o[j]
                x += a0 * M0[j]
                x += a1 * M1[j]
                x += a2 * M2[j]
                x += a3 * M3[j]
                o[j] = x
            q += ROWS_PER_PASS
        for q in range(q, k):
            i = rows[q]
            s = s0[i]
            Mi = M[i]
            for j in range(m):
                o[j] += s * Mi[j]


@njit(**_JIT)
def project(S, M, out):
    """``out = S @ M`` for spike counts ``S`` (rows, n), skipping silent sources."""
    _project(S, M, out, np.empty(S.shape[1], np.int64))


@njit(inline="always")
def _add_scaled(out, x, a):
    """``out += a * x`` for 2-D arrays of one shape."""
    B, n = x.shape
    for b in range(B):
        for i in range(n):
            out[b, i] += a * x[b, i]


@njit(inline="always")
def _scale_add(out, a, x, g):
    """``out = a * out + g * x`` for 2-D arrays of one shape."""
    B, n = out.shape
    for i in range(B):
        for j in range(n):
            out[i, j] = a * out[i, j] + g * x[i, j]


@njit(inline="always")
def _scale(out, a):
    """``out *= a`` for a 2-D array."""
    B, n = out.shape
    for i in range(B):
        for j in range(n):
            out[i, j] *= a


@njit(inline="always")
def _add_row(out, row, g):
    """``out += g * row`` for every row of ``out`` (B, n); ``row`` (n,)."""
    B, n = out.shape
    for i in range(B):
        for j in range(n):
            out[i, j] += g * row[j]


@njit(inline="always")
def _kernel_sum_add(weights, stack, out):
    """``out += sum_k weights[k] * stack[k]`` (stack (mem, B, n))."""
    for k in range(stack.shape[0]):
        if weights[k] != 0.0:
            _add_scaled(out, stack[k], weights[k])


@njit
def _project_traced(S, M, proj, slot, trace, decay, rows):
    """Project spikes ``S`` into ring slot ``slot`` of ``proj`` and advance the PSP traces.

    ``trace[0]``, ``trace[1]`` (B, n) hold ``sum_a d^(a+1) proj(t - a)``,
    a = 0 .. mem - 1, for ``d = exp(-1/tau_L)`` and ``exp(-1/tau_s)``: the
    PSP-filtered drive is their difference over ``tau_L - tau_s``. Advancing
    by one step multiplies by ``d``, adds ``d`` times the new projection and
    removes ``d^(mem+1)`` times the one it overwrites (spikes older than
    ``mem`` steps no longer count). ``decay``: d_L, d_L^(mem+1), d_s,
    d_s^(mem+1), 1 / (tau_L - tau_s).
    """
    dL, dLm, ds, dsm = decay[D_L], decay[D_L_MEM], decay[D_S], decay[D_S_MEM]
    old, xL, xs = proj[slot], trace[0], trace[1]
    B, n = old.shape
    for i in range(B):
        for j in range(n):
            xL[i, j] = dL * xL[i, j] - dLm * old[i, j]
            xs[i, j] = ds * xs[i, j] - dsm * old[i, j]
    _project(S, M, old, rows)
    for i in range(B):
        for j in range(n):
            xL[i, j] += dL * old[i, j]
            xs[i, j] += ds * old[i, j]


@njit(inline="always")
def _trace_drive(trace, inv_dtau, out):
    """``out = (trace[0] - trace[1]) / (tau_L - tau_s)``: the PSP-filtered drive."""
    xL, xs = trace[0], trace[1]
    B, n = out.shape
    for i in range(B):
        for j in range(n):
            out[i, j] = (xL[i, j] - xs[i, j]) * inv_dtau


@njit
def _widest(arrays):
    """The largest second dimension of a tuple of 2-D arrays."""
    w = 0
    for x in arrays:
        w = max(w, x.shape[1])
    return w


@njit
def _dendrite(spiking, trace, inv_dtau, src_rates, M, out, seen, l, src_version):
    """Dendritic potential ``out`` before biases: from the PSP traces (spiking source; returns
    1), or ``src_rates @ M`` when the source's rates changed since ``seen[l]`` (returns 2;
    else 0, ``out`` unchanged)."""
    if spiking:
        _trace_drive(trace, inv_dtau, out)
        return 1
    if seen[l] != src_version:
        np.dot(src_rates, M, out)
        seen[l] = src_version
        return 2
    return 0


@njit(**_JIT)
def phase_steps(t_first, t_last, L_phase, start, step, mem, nL, flags, fb_src, consts, decay,
                WT, b, YT, c, pend_P, pend_Q, pend_m,
                rates, version, hist, p0_in, C, A, drive, ff_proj, ff_trace, ff_seen, fb_proj, fb_trace, fb_seen,
                target, pl_start, pl_end, C_sum, A_sum, lam_sum, psp_ff, psp_fb,
                U, u_start, key, bits, u_off, per_step, wv0, off0, wv1, off1, hist_w0, hist_w1):
    """Simulate phase steps ``t_first .. t_last`` (1-based within a phase of ``L_phase`` steps).

    ``step``: global step counter before ``t_first`` (ring slot of step g is
    ``g % mem``). ``flags``, ``consts``, ``decay``: the packed arrays named by
    ``FLAG_NAMES``, ``CONST_NAMES``, ``DECAY_NAMES`` (see the interface above).
    ``target`` (B, n_out): 0/1 teaching signal (conductances g_E, g_I = 1 - g_E).
    ``pl_start``, ``pl_end`` (per hidden layer, (B, n) ints): per-neuron
    apical windows when plateau times are random.
    Spike uniforms: ``per_step`` per step, source ``i`` from ``u_off[i]`` on
    within a step, step ``t_first`` from number ``u_start`` on; numbers of
    the SplitMix64 stream ``key`` (``bits`` = 24 or 53 random bits each), or,
    when ``bits`` is 0, entries of ``U``.
    Sums over the window (steps ``start .. L_phase``) go to ``C_sum``,
    ``A_sum``, ``lam_sum``, ``psp_ff``, ``psp_fb`` (emptied when ``t_first``
    is 1) and are divided by the window length once the phase ends. Spikes
    enter the mean PSPs with weight ``wv0[t - off0]`` (feedforward) or
    ``wv1[t - off1]`` (feedback) at phase step t; the spikes of the ring
    before the phase with ``hist_w0`` / ``hist_w1`` (per ring slot).
    Returns ``(step, done)``; ``done`` when the phase ended early because a
    step changed nothing (its window sums then cover the rest).
    """
    ff_spk, fb_spk, cond = flags[F_SPIKING_FF], flags[F_SPIKING_FB], flags[F_CONDUCTANCES]
    apical_cond, apical, has_teach = flags[F_APICAL_CONDUCTANCE], flags[F_APICAL], flags[F_TEACH]
    collect_A, collect_lam, collect_psp = flags[F_COLLECT_A], flags[F_COLLECT_LAM], flags[F_COLLECT_PSP]
    need_fb_psp, plateau = flags[F_NEED_FB_PSP], flags[F_PLATEAU]
    keep_h, keep_o, keep_t = consts[C_KEEP_H], consts[C_KEEP_O], consts[C_KEEP_T]
    gain_h, gain_A, k_B, k_D = consts[C_GAIN_H], consts[C_GAIN_A], consts[C_K_B], consts[C_K_D]
    g_D, g_L, lam_max = consts[C_G_D], consts[C_G_L], consts[C_LAMBDA_MAX]
    n_hidden = nL - 1
    spiking_any = ff_spk or fb_spk
    rows = np.empty(_widest(rates), np.int64)  # scratch of _project: one per source neuron
    one, E_E, E_I, sdt = consts[C_ONE], consts[C_E_E], consts[C_E_I], consts[C_DT]
    if t_first == 1:  # a new phase: empty sums; history spikes enter the mean PSPs once, now
        for l in range(nL):
            C_sum[l][...] = 0.0
        if collect_A:
            for l in range(n_hidden):
                A_sum[l][...] = 0.0
        if collect_lam:
            lam_sum[...] = 0.0
        if collect_psp:
            for l in range(nL):
                psp_ff[l][...] = 0.0
                if ff_spk:
                    _kernel_sum_add(hist_w0, hist[l], psp_ff[l])
        if need_fb_psp:
            for l in range(n_hidden):
                psp_fb[l][...] = 0.0
                if fb_spk:
                    _kernel_sum_add(hist_w1, hist[fb_src[l] + 1], psp_fb[l])
    for t in range(t_first, t_last + 1):
        step += 1
        slot = step % mem
        changed_phase = t == 1
        anything = changed_phase or cond or spiking_any
        in_window = t >= start
        ubase = u_start + (t - t_first) * per_step
        if ff_spk:  # input spikes
            S = hist[0][slot]
            _sample(rates[0], p0_in, True, U, ubase + u_off[0], key, bits, S, one)
            _project_traced(S, WT[0], ff_proj[0], slot, ff_trace[0], decay, rows)
            if collect_psp and 0 <= t - off0 < wv0.size and wv0[t - off0] != 0:
                _add_scaled(psp_ff[0], S, wv0[t - off0])
        for l in range(nL):
            hidden = l < n_hidden
            Cl = C[l]
            Dl = drive[l]
            Bn, n = Cl.shape
            # basal / dendritic drive
            how = _dendrite(ff_spk, ff_trace[l], decay[D_INV_DTAU], rates[l], WT[l], Dl, ff_seen, l, version[l])
            drive_changed = how > 0
            if how == 2:  # recomputed from rates: pending low-rank update, bias
                m = pend_m[l]
                if m > 0:
                    Dl += np.dot(np.dot(rates[l], pend_P[l][:m].T), pend_Q[l][:m])
                _add_row(Dl, b[l], 1.0)
            if collect_psp and not ff_spk and in_window:
                _add_scaled(psp_ff[l], rates[l], 1.0)
            if hidden and apical:
                Al = A[l]
                src = fb_src[l] + 1
                if _dendrite(fb_spk, fb_trace[l], decay[D_INV_DTAU], rates[src], YT[l], Al, fb_seen, l, version[src]):
                    anything = True
                    if c[l].size:  # feedback bias
                        _add_row(Al, c[l], 1.0)
                if need_fb_psp and in_window and not fb_spk:
                    _add_scaled(psp_fb[l], rates[src], 1.0)
            # soma
            C_changed = False
            if cond:
                # C <- C + dt (-g_L C + g_B (D - C) [+ g_A (A - C)] [+ g_E (E_E - C) + g_I (E_I - C)])
                keep = keep_h if hidden else (keep_t if has_teach else keep_o)
                _scale_add(Cl, keep, Dl, gain_h)
                if ff_spk:  # spike mode: the bias is not part of the filtered drive
                    _add_row(Cl, b[l], gain_h)
                if hidden and apical_cond:
                    _add_scaled(Cl, A[l], gain_A)
                if not hidden and has_teach:  # dt (g_E E_E + g_I E_I)
                    for i in range(Bn):
                        for j in range(n):
                            gE = target[i, j]
                            Cl[i, j] += sdt * (gE * E_E + (one - gE) * E_I)
                C_changed = True
            elif drive_changed or (not hidden and changed_phase):
                bl = b[l]
                bias_gain = 1.0 if ff_spk else 0.0  # spike mode: the bias is not in the drive
                if not hidden and has_teach:
                    for i in range(Bn):
                        for j in range(n):
                            d = Dl[i, j] + bias_gain * bl[j]
                            gE = target[i, j]
                            Cl[i, j] = (g_D * d + gE * E_E + (one - gE) * E_I) / (g_L + g_D + one)
                else:
                    k = k_B if hidden else k_D
                    for i in range(Bn):
                        for j in range(n):
                            Cl[i, j] = k * (Dl[i, j] + bias_gain * bl[j])
                C_changed = True
            if C_changed:
                anything = True
                r = rates[l + 1]
                for i in range(Bn):
                    for j in range(n):
                        r[i, j] = _rate(Cl[i, j], lam_max, one)
                version[l + 1] += 1
            # spikes of this layer, for the pathways that read them
            if flags[F_SPIKING_SRC + l + 1]:
                S = hist[l + 1][slot]
                _sample(rates[l + 1], p0_in, False, U, ubase + u_off[l + 1], key, bits, S, one)
                if ff_spk and l + 1 < nL:
                    _project_traced(S, WT[l + 1], ff_proj[l + 1], slot, ff_trace[l + 1], decay, rows)
                    if collect_psp and 0 <= t - off0 < wv0.size and wv0[t - off0] != 0:
                        _add_scaled(psp_ff[l + 1], S, wv0[t - off0])
                if fb_spk and apical:
                    for l2 in range(n_hidden):
                        if fb_src[l2] == l:
                            _project_traced(S, YT[l2], fb_proj[l2], slot, fb_trace[l2], decay, rows)
                            if need_fb_psp and 0 <= t - off1 < wv1.size and wv1[t - off1] != 0:
                                _add_scaled(psp_fb[l2], S, wv1[t - off1])
        if not anything and t > 1:
            # nothing changed in this whole step: the remaining steps repeat it exactly
            _fast_forward(nL, t, L_phase, start, C, A, rates, fb_src, C_sum, A_sum, lam_sum, psp_ff,
                          psp_fb, collect_A, collect_lam, collect_psp, need_fb_psp, plateau,
                          pl_start, pl_end)
            _window_means(nL, L_phase - start + 1, C_sum, A_sum, lam_sum, psp_ff, psp_fb, collect_A, collect_lam,
                          collect_psp and not ff_spk, need_fb_psp and not fb_spk)
            return step + L_phase - t, True
        if in_window:
            for l in range(nL):
                _add_scaled(C_sum[l], C[l], 1.0)
            if collect_lam:
                _add_scaled(lam_sum, rates[nL], 1.0)
        if collect_A:
            for l in range(n_hidden):
                if not plateau:
                    if in_window:
                        _add_scaled(A_sum[l], A[l], 1.0)
                else:
                    Al, As, ps, pe = A[l], A_sum[l], pl_start[l], pl_end[l]
                    Bn, n = Al.shape
                    for i in range(Bn):
                        for j in range(n):
                            if ps[i, j] <= t and t <= pe[i, j]:
                                As[i, j] += Al[i, j]
    if t_last == L_phase:
        _window_means(nL, L_phase - start + 1, C_sum, A_sum, lam_sum, psp_ff, psp_fb, collect_A, collect_lam,
                      collect_psp and not ff_spk, need_fb_psp and not fb_spk)
    return step, False


@njit
def _window_means(nL, T, C_sum, A_sum, lam_sum, psp_ff, psp_fb, collect_A, collect_lam, rate_psp_ff,
                  rate_psp_fb):
    """Divide the window sums by the window length ``T`` (spike PSP sums are means already)."""
    inv = 1.0 / T
    for l in range(nL):
        _scale(C_sum[l], inv)
        if rate_psp_ff:
            _scale(psp_ff[l], inv)
    for l in range(nL - 1):
        if collect_A:
            _scale(A_sum[l], inv)
        if rate_psp_fb:
            _scale(psp_fb[l], inv)
    if collect_lam:
        _scale(lam_sum, inv)


@njit
def _fast_forward(nL, t, L_phase, start, C, A, rates, fb_src, C_sum, A_sum, lam_sum, psp_ff, psp_fb,
                  collect_A, collect_lam, collect_psp, need_fb_psp, plateau, pl_start, pl_end):
    """Add the window contributions of steps ``t .. L_phase`` (all equal to step t)."""
    n_win = L_phase - max(t, start) + 1
    if n_win > 0:
        f = float(n_win)
        f_psp = f - 1.0 if t >= start else f  # step t's rates were already added once
        for l in range(nL):
            _add_scaled(C_sum[l], C[l], f)
        if collect_lam:
            _add_scaled(lam_sum, rates[nL], f)
        if collect_psp:
            for l in range(nL):
                _add_scaled(psp_ff[l], rates[l], f_psp)
        if need_fb_psp:
            for l in range(nL - 1):
                _add_scaled(psp_fb[l], rates[fb_src[l] + 1], f_psp)
        if collect_A and not plateau:
            for l in range(nL - 1):
                _add_scaled(A_sum[l], A[l], f)
    if collect_A and plateau:
        for l in range(nL - 1):
            Al, As, ps, pe = A[l], A_sum[l], pl_start[l], pl_end[l]
            Bn, n = Al.shape
            for i in range(Bn):
                for j in range(n):
                    cnt = pe[i, j] - max(ps[i, j], t) + 1
                    if cnt > 0:
                        As[i, j] += cnt * Al[i, j]


@njit(**_JIT)
def two_phases(L_f, L_t, start_f, start_t, step, flags_f, flags_t, lead, rest, sums_f, sums_t, U, u_start, key,
               bits, u_off, per_step, psp_f, psp_t):
    """A training example's forward phase (``L_f`` steps, window from ``start_f``) then its target
    phase (``L_t``, from ``start_t``): :func:`phase_steps` twice, in one call.

    The two phases share every argument of the loop but their switches (``flags_f``, ``flags_t``),
    window sums (``sums_f``, ``sums_t``: the five tuples) and spike-time PSP weights (``psp_f``,
    ``psp_t``: the six arguments after ``per_step``); ``lead`` = ``(mem, nL)``, ``rest`` = the
    arguments from ``fb_src`` to ``pl_end``. The target phase's uniforms follow the forward's.
    Returns the step counter after both.
    """
    step, _ = phase_steps(1, L_f, L_f, start_f, step, lead[0], lead[1], flags_f, *rest, *sums_f, U, u_start, key,
                          bits, u_off, per_step, *psp_f)
    step, _ = phase_steps(1, L_t, L_t, start_t, step, lead[0], lead[1], flags_t, *rest, *sums_t, U,
                          u_start + L_f * per_step, key, bits, u_off, per_step, *psp_t)
    return step


@njit(**_JIT)
def local_errors(nL, fwd_C, fwd_A, tgt_A, lam_out, WT, consts, use_backprop, update_feedback, E, E_inv):
    """Per-example local errors of every layer, from the window means of one training batch.

    ``fwd_C`` (per layer, (B, n_l)), ``fwd_A`` and ``tgt_A`` (per hidden
    layer): somatic and apical means of the forward and target phases;
    ``lam_out`` (B, n_out): output rates in the target phase. Fills ``E``
    (per layer) and, with ``update_feedback``, ``E_inv`` (per hidden layer):

    * output: ``E = -(lam_out - lam_max s(C)) k_D lam_max s'(C)``;
    * hidden: ``E = -(s(A_t) - s(A_f)) k_B lam_max s'(C)``, or with
      ``use_backprop`` ``E = (E_{l+1} @ W_{l+1}) k_B lam_max s'(C)``;
    * feedback: ``E_inv = -(lam_max s(C) - s(A_f)) s'(A_f)``.

    ``consts``: k_B, k_D, lam_max. Returns ``(loss, finite)``: the mean output
    loss ``|lam_out - lam_max s(C)|^2`` and whether every error is finite.
    """
    k_B, k_D, lam_max = consts[E_K_B], consts[E_K_D], consts[E_LAMBDA_MAX]
    C_out, E_out = fwd_C[nL - 1], E[nL - 1]
    B, n = C_out.shape
    loss = 0.0
    for i in range(B):
        for j in range(n):
            s = _rate(C_out[i, j], 1.0, 1.0)
            d = lam_out[i, j] - lam_max * s
            loss += d * d
            E_out[i, j] = -d * (k_D * lam_max) * s * (1.0 - s)
    finite = math.isfinite(loss)
    for l in range(nL - 2, -1, -1):
        Cl, El = fwd_C[l], E[l]
        B, n = Cl.shape
        gain = k_B * lam_max
        if use_backprop:
            np.dot(E[l + 1], WT[l + 1].T, El)
            for i in range(B):
                for j in range(n):
                    s = _rate(Cl[i, j], 1.0, 1.0)
                    El[i, j] *= gain * s * (1.0 - s)
        else:
            At, Af = tgt_A[l], fwd_A[l]
            for i in range(B):
                for j in range(n):
                    s = _rate(Cl[i, j], 1.0, 1.0)
                    El[i, j] = -(_rate(At[i, j], 1.0, 1.0) - _rate(Af[i, j], 1.0, 1.0)) * (gain * s * (1.0 - s))
        if update_feedback:
            Af, Ei = fwd_A[l], E_inv[l]
            for i in range(B):
                for j in range(n):
                    a = _rate(Af[i, j], 1.0, 1.0)
                    Ei[i, j] = -(lam_max * _rate(Cl[i, j], 1.0, 1.0) - a) * a * (1.0 - a)
        total = 0.0
        for i in range(B):
            for j in range(n):
                total += El[i, j] * El[i, j]
        if not math.isfinite(total):
            finite = False
    return loss / B, finite


@njit(**_JIT)
def online_update(nL, WT, b, psp, E, scales, mode, P, Q, pending_m):
    """Updates of one example (batch 1): ``W_l -= scales[l] * psp_l^T E_l``, ``b_l -= scales[l] * E_l``.

    ``mode[l]``: 1 = queue the rank-1 term in the pending ``P[l]``, ``Q[l]``
    (slot ``pending_m[l]``, which advances); 2 = add it to ``WT[l]`` here
    (small matrices); 0 = leave ``WT[l]`` to the caller (large matrices,
    by BLAS). Biases are always updated here.
    """
    for l in range(nL):
        s = scales[l]
        x, e, bl = psp[l][0], E[l][0], b[l]
        if mode[l] == 1:
            m = pending_m[l]
            Pm, Qm = P[l][m], Q[l][m]
            for i in range(x.size):
                Pm[i] = x[i]
            for j in range(e.size):
                Qm[j] = -s * e[j]
            pending_m[l] = m + 1
        elif mode[l] == 2:
            W = WT[l]
            for i in range(x.size):
                a = -s * x[i]
                if a != 0.0:
                    Wi = W[i]
                    for j in range(e.size):
                        Wi[j] += a * e[j]
        for j in range(e.size):
            bl[j] -= s * e[j]


@njit(**_JIT)
def online_step(nL, fwd_C, fwd_A, tgt_A, lam_out, WT, consts, update_feedback, E, E_inv,
                b, psp, scales, mode, P, Q, pending_m, out_rates, sum_bound):
    """:func:`local_errors` (the local rule) then, if every error is finite, :func:`online_update`: one
    example's errors and updates in one call (batch 1; the same arithmetic in the same order).

    Returns ``(loss, errors_finite, sums)``; ``sums`` says whether the sums of ``out_rates`` and of
    the first layer's biases ``b[0]``, which the simulator checks after an update, are finite
    (:func:`sum_is_finite`; 0 when the update was not applied).
    """
    loss, finite = local_errors(nL, fwd_C, fwd_A, tgt_A, lam_out, WT, consts, False, update_feedback, E, E_inv)
    if not finite:
        return loss, False, 0
    online_update(nL, WT, b, psp, E, scales, mode, P, Q, pending_m)
    r = sum_is_finite(out_rates.reshape(-1), sum_bound)
    if r == 1:
        r = sum_is_finite(b[0], sum_bound)
    return loss, True, r


@njit(**_JIT)
def sum_is_finite(x, sum_bound):
    """Whether the sum of the 1-D array ``x`` in its own dtype (NumPy's ``x.sum()``, any summation
    order) is finite: 1 yes, 0 no, -1 undecided (ask NumPy).

    An entry that is NaN or infinite makes every such sum NaN or infinite (0). When every entry is
    finite and their absolute values add up, in float64, to less than ``sum_bound`` (half the
    dtype's largest number), no partial sum can overflow (1). Otherwise (-1) the answer depends
    on the order of the additions.
    """
    acc = 0.0
    for i in range(x.shape[0]):
        v = np.float64(x[i])
        if not math.isfinite(v):
            return 0
        acc += abs(v)
    return 1 if acc < sum_bound else -1


# ---------------------------------------------------------------- checks of the weights


@njit(**_JIT)
def queue_growth(P, Q, start, stop):
    """``sum_k max_i |P[k, i]| max_j |Q[k, j]|`` over rows ``start <= k < stop``, in float64 (the
    magnitude a queued low-rank update can add to an entry; ``state._grown_bound``). NaN propagates."""
    total = 0.0
    for k in range(start, stop):
        p = 0.0
        for i in range(P.shape[1]):
            a = abs(np.float64(P[k, i]))
            if a > p or a != a:  # a NaN, once taken, stays
                p = a
        q = 0.0
        for j in range(Q.shape[1]):
            a = abs(np.float64(Q[k, j]))
            if a > q or a != a:
                q = a
        total += p * q
    return total
