"""Batch size 1 of the vectorised core equals a naive transcription of the specification.

``ReferenceNetwork`` below is written straight from
``design/segregated-dendrites.md``: one example at a time, one time step at a
time, float64, histories as plain lists. It shares nothing with the core except
the random draws (an identically seeded :class:`RandomStreams`, consumed in the
documented order) and the initial weights (copied).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bioplaus.models.segdend.config import Config
from bioplaus.models.segdend.simulator import RandomStreams, Simulator
from bioplaus.models.segdend import state as segdend_state
from bioplaus.models.segdend.state import State, Weights


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def poisson_scalar(lam, u):
    """Inverse-CDF Poisson count of one uniform draw."""
    lam = max(lam, 0.0)
    term = math.exp(-lam)
    cdf, k = term, 0
    while u > cdf:
        k += 1
        term = term * lam / k
        cdf = cdf + term
    return k


class ReferenceNetwork:
    """Per-example, per-step transcription of the model specification (float64)."""

    def __init__(self, cfg: Config, weights: Weights, streams: RandomStreams):
        self.cfg, self.rs = cfg, streams
        self.W = [w.T.astype(np.float64).copy() for w in weights.WT]  # (n_l, n_{l-1})
        self.b = [x.astype(np.float64).copy() for x in weights.b]
        self.Y = [y.T.astype(np.float64).copy() for y in weights.YT]  # (n_l, n_src)
        self.c = [None if x is None else x.astype(np.float64).copy() for x in weights.c]
        self.masks = [None if m is None else m.T.astype(np.float64).copy() for m in weights.masks]
        nL = cfg.n_layers
        self.nL = nL
        self.kappa = [(math.exp(-u / cfg.tau_L) - math.exp(-u / cfg.tau_s)) / (cfg.tau_L - cfg.tau_s)
                      for u in range(1, cfg.mem + 1)]
        self.C = [np.zeros(n) for n in cfg.sizes[1:]]
        self.lam = [np.zeros(n) for n in cfg.sizes[1:]]
        # which activities are sampled as spikes (index 0 = input, l + 1 = layer l)
        self.spiking = [cfg.use_spiking_feedforward] + [False] * nL
        for l in range(nL - 1):
            if cfg.use_spiking_feedforward:
                self.spiking[l + 1] = True
            if cfg.use_spiking_feedback:
                self.spiking[cfg.feedback_source(l) + 1] = True
        self.hist = [[np.zeros(n) for _ in range(cfg.mem)] for n in cfg.sizes]

    def psp(self, i):
        """PSP of source i: sum over the last mem spike vectors, newest weighted kappa(1)."""
        h = self.hist[i]
        return sum(self.kappa[age] * h[-1 - age] for age in range(self.cfg.mem))

    def spike(self, i, rates):
        u = self.rs.uniform((1, rates.size))[0]
        S = np.array([poisson_scalar(r, v) for r, v in zip(rates, u)], dtype=np.float64)
        self.hist[i].append(S)
        self.hist[i].pop(0)

    def train_example(self, x, t):
        cfg, nL = self.cfg, self.nL
        g_L = 1.0 / cfg.tau_L
        g_A = cfg.g_A if cfg.use_apical_conductance else 0.0
        g_B = g_D = cfg.g_B
        k_B = g_B / (g_L + g_B + g_A)
        k_D = g_D / (g_L + g_D)
        lam_max = cfg.lambda_max
        Lf, Lt, T = cfg.l_f_phase, cfg.l_t_phase, cfg.integration_time
        if cfg.use_rand_phase_lengths:
            Lf += self.rs.extra_phase_length()
            Lt += self.rs.extra_phase_length()
        plateau = {"f": [Lf] * (nL - 1), "t": [Lt] * (nL - 1)}
        if cfg.use_rand_plateau_times:
            for ph, Lp in (("f", Lf), ("t", Lt)):
                plateau[ph] = [Lp - np.minimum(self.rs.plateau_offsets((1, cfg.sizes[l + 1]))[0], Lp - T)
                               for l in range(nL - 1)]
        x_rate = lam_max * x
        rec = {}
        for ph, Lp in (("f", Lf), ("t", Lt)):
            steps = []
            for step in range(1, Lp + 1):
                r = {"C": [], "A": [], "psp_ff": [], "psp_fb": []}
                if cfg.use_spiking_feedforward:
                    self.spike(0, x_rate)
                for l in range(nL):
                    hidden = l < nL - 1
                    if cfg.use_spiking_feedforward:
                        psp_ff = self.psp(l)
                    else:
                        psp_ff = x_rate if l == 0 else self.lam[l - 1]
                    Bv = self.W[l] @ psp_ff + self.b[l]
                    if hidden:
                        src = cfg.feedback_source(l)
                        psp_fb = self.psp(src + 1) if cfg.use_spiking_feedback else self.lam[src]
                        A = self.Y[l] @ psp_fb
                        if cfg.use_feedback_bias:
                            A = A + self.c[l]
                        r["A"].append(A)
                        r["psp_fb"].append(psp_fb)
                    C = self.C[l]
                    if hidden:
                        if cfg.use_conductances:
                            dC = -g_L * C + g_B * (Bv - C)
                            if cfg.use_apical_conductance:
                                dC = dC + g_A * (A - C)
                            C = C + cfg.dt * dC
                        else:
                            C = k_B * Bv
                    else:
                        if ph == "f":
                            if cfg.use_conductances:
                                C = C + cfg.dt * (-g_L * C + g_D * (Bv - C))
                            else:
                                C = k_D * Bv
                        else:
                            gE, gI = t, 1.0 - t
                            if cfg.use_conductances:
                                C = C + cfg.dt * (-g_L * C + g_D * (Bv - C) + gE * (cfg.E_E - C)
                                                  + gI * (cfg.E_I - C))
                            else:
                                C = (g_D * Bv + gE * cfg.E_E + gI * cfg.E_I) / (g_L + g_D + gE + gI)
                    self.C[l] = C
                    self.lam[l] = lam_max * sig(C)
                    if self.spiking[l + 1]:
                        self.spike(l + 1, self.lam[l])
                    r["C"].append(C.copy())
                    r["psp_ff"].append(np.array(psp_ff, dtype=np.float64))
                r["lam_out"] = self.lam[-1].copy()
                steps.append(r)
            rec[ph] = steps

        def mean(ph, key, l):
            return np.mean([s[key][l] for s in rec[ph][-T:]], axis=0)

        def plateau_mean(ph, l):
            end = plateau[ph][l]
            A = np.array([s["A"][l] for s in rec[ph]])  # (L, n)
            steps = np.arange(1, A.shape[0] + 1)[:, None]
            inwin = (steps <= end) & (steps > end - T)
            return (A * inwin).sum(axis=0) / T

        Cf = [mean("f", "C", l) for l in range(nL)]
        psp_f = [mean("f", "psp_ff", l) for l in range(nL)]
        lam_t = np.mean([s["lam_out"] for s in rec["t"][-T:]], axis=0)
        E = [None] * nL
        sC = sig(Cf[-1])
        E[-1] = -(lam_t - lam_max * sC) * k_D * lam_max * sC * (1 - sC)
        alpha_f = [sig(plateau_mean("f", l)) for l in range(nL - 1)]
        alpha_t = [sig(plateau_mean("t", l)) for l in range(nL - 1)]
        # layers are updated from the top; with backprop a hidden error passes through the layer
        # above's weights as already updated (the published code's order)
        for l in range(nL - 1, -1, -1):
            if l < nL - 1:
                sC = sig(Cf[l])
                if cfg.use_backprop:
                    E[l] = (self.W[l + 1].T @ E[l + 1]) * k_B * lam_max * sC * (1 - sC)
                else:
                    E[l] = -(alpha_t[l] - alpha_f[l]) * k_B * lam_max * sC * (1 - sC)
            P = 20.0 / lam_max**2 if l == nL - 1 else 20.0 / lam_max
            self.W[l] -= cfg.f_etas[l] * P * np.outer(E[l], psp_f[l])
            self.b[l] -= cfg.f_etas[l] * P * E[l]
        if cfg.update_feedback_weights:
            for l in range(nL - 1):
                Af = plateau_mean("f", l)
                E_inv = -(lam_max * sig(Cf[l]) - sig(Af)) * sig(Af) * (1 - sig(Af))
                self.Y[l] -= cfg.b_etas[l] * np.outer(E_inv, mean("f", "psp_fb", l))
                if cfg.use_feedback_bias:
                    self.c[l] -= cfg.b_etas[l] * E_inv
                if self.masks[l] is not None:  # re-masked, survivors times 5 (after every update)
                    self.Y[l] *= 5.0 * self.masks[l]
        if cfg.use_symmetric_weights:
            raw = [None] * (nL - 1)
            for l in range(nL - 2, -1, -1):
                Wt = self.W[l + 1].T
                if cfg.noisy_symmetric_weights:
                    Wt = Wt + self.rs.normal(0.05, Wt.shape if cfg.use_broadcast else ())  # one number
                raw[l] = Wt @ raw[l + 1] if (cfg.use_broadcast and l < nL - 2) else Wt
            for l in range(nL - 1):
                self.Y[l] = raw[l] * (5.0 * self.masks[l]) if self.masks[l] is not None else raw[l].copy()

    def test_scores(self, x):
        """Output mean somatic potential over the test window; voltages cleared first."""
        cfg = self.cfg
        saved = (self.C, self.lam, self.hist)
        self.C = [np.zeros(n) for n in cfg.sizes[1:]]
        self.lam = [np.zeros(n) for n in cfg.sizes[1:]]
        self.hist = [[np.zeros(n) for _ in range(cfg.mem)] for n in cfg.sizes]
        g_L = 1.0 / cfg.tau_L
        g_A = cfg.g_A if cfg.use_apical_conductance else 0.0
        k_B = cfg.g_B / (g_L + cfg.g_B + g_A)
        k_D = cfg.g_B / (g_L + cfg.g_B)
        apical = cfg.use_conductances and cfg.use_apical_conductance
        spiking = [cfg.use_spiking_feedforward] + [cfg.use_spiking_feedforward and l < self.nL - 1
                                                   for l in range(self.nL)]
        if apical and cfg.use_spiking_feedback:
            for l in range(self.nL - 1):
                spiking[cfg.feedback_source(l) + 1] = True
        out = []
        for step in range(cfg.l_f_phase_test):
            if spiking[0]:
                self.spike(0, cfg.lambda_max * x)
            for l in range(self.nL):
                psp = self.psp(l) if cfg.use_spiking_feedforward else (
                    cfg.lambda_max * x if l == 0 else self.lam[l - 1])
                Bv = self.W[l] @ psp + self.b[l]
                hidden = l < self.nL - 1
                if cfg.use_conductances:
                    dC = -g_L * self.C[l] + cfg.g_B * (Bv - self.C[l])
                    if hidden and apical:
                        src = cfg.feedback_source(l)
                        fb = self.psp(src + 1) if cfg.use_spiking_feedback else self.lam[src]
                        A = self.Y[l] @ fb + (self.c[l] if cfg.use_feedback_bias else 0.0)
                        dC = dC + g_A * (A - self.C[l])
                    self.C[l] = self.C[l] + cfg.dt * dC
                else:
                    self.C[l] = (k_B if hidden else k_D) * Bv
                self.lam[l] = cfg.lambda_max * sig(self.C[l])
                if spiking[l + 1]:
                    self.spike(l + 1, self.lam[l])
            out.append(self.C[-1].copy())
        self.C, self.lam, self.hist = saved
        return np.mean(out[-cfg.integration_time_test:], axis=0)


def _data(n, n_in, n_classes, seed):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0)[:, :n_in]
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(X))[:n]
    return X[idx], y[idx] % n_classes


BASE = dict(sizes=(64, 20, 10), f_etas=(0.21, 0.21), b_etas=(0.1,))
RATE_CASES = {
    "default": {},
    "sparse_feedback": dict(use_sparse_feedback=True),
    "conductances": dict(use_conductances=True, l_f_phase=6, l_t_phase=5, integration_time=3),
    "no_broadcast_2h": dict(use_broadcast=False, sizes=(64, 16, 12, 10), f_etas=(0.2, 0.2, 0.2),
                            b_etas=(0.1, 0.1)),
    "broadcast_3h_symmetric": dict(sizes=(64, 16, 12, 8, 10), f_etas=(0.1,) * 4, b_etas=(0.1,) * 3,
                                   use_symmetric_weights=True),
    "symmetric": dict(use_symmetric_weights=True),
    "noisy_symmetric_2h": dict(use_symmetric_weights=True, noisy_symmetric_weights=True,
                               sizes=(64, 16, 12, 10), f_etas=(0.2, 0.2, 0.2), b_etas=(0.1, 0.1)),
    "noisy_symmetric_no_broadcast_2h": dict(use_symmetric_weights=True, noisy_symmetric_weights=True,
                                            use_broadcast=False, sizes=(64, 16, 12, 10), f_etas=(0.2, 0.2, 0.2),
                                            b_etas=(0.1, 0.1)),
    "feedback_learning_bias": dict(update_feedback_weights=True, use_feedback_bias=True),
    "feedback_learning_sparse": dict(update_feedback_weights=True, use_sparse_feedback=True),
    "sparse_symmetric": dict(use_sparse_feedback=True, use_symmetric_weights=True),
    "apical_conductance": dict(use_conductances=True, use_apical_conductance=True, g_A=0.08,
                               l_f_phase=5, l_t_phase=4, integration_time=2),
    "apical_no_conductances": dict(use_apical_conductance=True, g_A=0.08),
    "plain_init": dict(use_weight_optimization=False, f_etas=(0.05, 0.05)),
    "rand_phases_plateaus": dict(use_rand_phase_lengths=True, use_rand_plateau_times=True,
                                 l_f_phase=8, l_t_phase=7, integration_time=3),
    "long_phases_static": dict(l_f_phase=12, l_t_phase=9, integration_time=4),
    "units_per_class_2": dict(units_per_class=2, sizes=(64, 20, 20)),
    "backprop_2h": dict(use_backprop=True, sizes=(64, 16, 12, 10), f_etas=(0.2, 0.1, 0.1),
                        b_etas=(0.1, 0.1)),
    "no_hidden": dict(sizes=(64, 10), f_etas=(0.21,), b_etas=()),
    "searched_numbers": dict(dt=0.4, lambda_max=0.35, tau_s=2.0, tau_L=12.0, g_B=0.4, E_E=6.0,
                             E_I=-10.0, use_conductances=True, l_f_phase=7, l_t_phase=6,
                             integration_time=3, f_etas=(0.1, 0.3)),
}
SPIKE_BASE = dict(l_f_phase=7, l_t_phase=6, integration_time=3, l_f_phase_test=9, integration_time_test=4,
                  mem=4, use_conductances=True)
SPIKE_CASES = {
    "spiking_ff": dict(use_spiking_feedforward=True),
    "spiking_fb": dict(use_spiking_feedback=True),
    "spiking_both_2h_feedback_learning": dict(use_spiking_feedforward=True, use_spiking_feedback=True,
                                              sizes=(64, 14, 12, 10), f_etas=(0.2, 0.2, 0.2),
                                              b_etas=(0.1, 0.1), update_feedback_weights=True,
                                              use_feedback_bias=True),
    "spiking_no_broadcast_fb_learning": dict(use_spiking_feedback=True, use_broadcast=False,
                                             sizes=(64, 14, 12, 10), f_etas=(0.2, 0.2, 0.2),
                                             b_etas=(0.1, 0.1), update_feedback_weights=True),
    "spiking_long_mem_rand": dict(use_spiking_feedforward=True, use_spiking_feedback=True, mem=9,
                                  use_rand_phase_lengths=True, use_rand_plateau_times=True),
}


def _compare(cfg_kwargs, n_examples, seed=0):
    kw = {**BASE, **cfg_kwargs}
    cfg = Config(**kw)
    n_in, n_out = cfg.sizes[0], cfg.sizes[-1]
    n_classes = n_out // cfg.units_per_class
    X, y = _data(n_examples, n_in, n_classes, seed)
    targets = np.repeat(np.eye(n_classes)[y], cfg.units_per_class, axis=1)
    w = Weights.initial(cfg, np.random.default_rng(seed + 1), np.float64)
    ref = ReferenceNetwork(cfg, w, RandomStreams(np.random.default_rng(seed + 2), np.float64))
    sim = Simulator(cfg, np.float64)
    st = State(cfg, 1, np.float64)
    streams = RandomStreams(np.random.default_rng(seed + 2), np.float64)
    for i in range(n_examples):
        sim.train_batch(st, w, X[i:i + 1], targets[i:i + 1], streams)
        ref.train_example(X[i], targets[i])
    w.flush()  # apply pending low-rank updates, if any
    for l in range(cfg.n_layers):
        np.testing.assert_allclose(w.WT[l].T, ref.W[l], rtol=1e-9, atol=1e-11, err_msg=f"W[{l}]")
        np.testing.assert_allclose(w.b[l], ref.b[l], rtol=1e-9, atol=1e-11, err_msg=f"b[{l}]")
    for l in range(cfg.n_layers - 1):
        np.testing.assert_allclose(w.YT[l].T, ref.Y[l], rtol=1e-9, atol=1e-11, err_msg=f"Y[{l}]")
        if cfg.use_feedback_bias:
            np.testing.assert_allclose(w.c[l], ref.c[l], rtol=1e-9, atol=1e-11)
    # the weights moved: the comparison is not vacuous
    assert not np.allclose(w.WT[-1].T, Weights.initial(cfg, np.random.default_rng(seed + 1),
                                                            np.float64).WT[-1].T)
    # test phase: scores of a few examples, same test streams
    Xt = X[:5]
    test_streams = RandomStreams(np.random.default_rng(99), np.float64)
    ref.rs = RandomStreams(np.random.default_rng(99), np.float64)
    ref_scores = np.array([ref.test_scores(x) for x in Xt])
    if not (cfg.use_spiking_feedforward):
        scores = sim.output_scores(w, Xt, test_streams)
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-9, atol=1e-11)
    else:  # spikes: examples side by side draw their uniforms jointly; compare one at a time
        scores = np.vstack([sim.output_scores(w, Xt[i:i + 1], RandomStreams(np.random.default_rng(7)))
                            for i in range(len(Xt))])
        ref_one = []
        for i in range(len(Xt)):
            ref.rs = RandomStreams(np.random.default_rng(7))
            ref_one.append(ref.test_scores(Xt[i]))
        np.testing.assert_allclose(scores, np.array(ref_one), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("case", sorted(RATE_CASES))
def test_rate_mode_matches_reference(case):
    _compare(RATE_CASES[case], n_examples=300)


@pytest.mark.parametrize("case", sorted(SPIKE_CASES))
def test_spiking_mode_matches_reference_with_shared_draws(case):
    _compare({**SPIKE_BASE, **SPIKE_CASES[case]}, n_examples=120)


@pytest.mark.parametrize("case", ["default", "feedback_learning_bias", "no_broadcast_2h", "rand_phases_plateaus"])
def test_deferred_low_rank_updates_match_reference(case, monkeypatch):
    """Online updates kept as a pending low-rank sum (big matrices) change nothing but round-off."""
    monkeypatch.setattr(segdend_state, "DEFER_MIN_SIZE", 1)
    monkeypatch.setattr(segdend_state, "DEFER_RANK", 7)
    _compare(RATE_CASES[case], n_examples=300)
