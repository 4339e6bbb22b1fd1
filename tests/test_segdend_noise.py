"""Normal numbers of the segdend random streams (noisy symmetric feedback): accuracy, distribution,
determinism and independence from how the draws are grouped."""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from bioplaus.models.segdend import _noise
from bioplaus.models.segdend.simulator import RandomStreams


def test_quantile_matches_the_exact_inverse_normal_cdf_in_centre_and_tails():
    u = np.concatenate([np.logspace(-16, np.log10(0.5), 20_000), 0.5 + np.linspace(-0.49, 0.49, 20_001),
                        1.0 - np.logspace(-15, np.log10(0.4), 20_000), [0.02425, 1 - 0.02425]])
    out = np.empty_like(u)
    _noise.normal_quantile(u, out)
    exact = special.ndtri(u)
    np.testing.assert_allclose(out, exact, rtol=1.2e-9, atol=1e-12)  # Acklam's bound: 1.15e-9 relative


def test_normals_are_standard_normal_and_scaled():
    s = RandomStreams(np.random.default_rng(11))
    z = s.normal(1.0, (1_000_000,))
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 5e-3 and abs(z.std() - 1.0) < 5e-3
    tail = np.mean(np.abs(z) > 3.0)  # the tail formula is used: P(|Z| > 3) = 0.0027
    assert abs(tail - 0.0027) < 4e-4
    s2 = RandomStreams(np.random.default_rng(11))
    np.testing.assert_allclose(s2.normal(0.05, (1_000_000,)), 0.05 * z, rtol=1e-15)


def test_normals_do_not_depend_on_grouping_and_leave_other_draws_alone():
    a, b = RandomStreams(np.random.default_rng(5)), RandomStreams(np.random.default_rng(5))
    whole = a.normal(0.05, (7, 30))
    parts = np.concatenate([b.normal(0.05, (3, 30)).ravel(), b.normal(0.05, ()).ravel(),
                            b.normal(0.05, (119,)).ravel()])
    np.testing.assert_array_equal(whole.ravel(), parts)
    assert a.normal_counter == b.normal_counter == 210
    # spike uniforms and the Generator's own draws are not consumed by normals
    c = RandomStreams(np.random.default_rng(5))
    np.testing.assert_array_equal(a.uniform((50,)), c.uniform((50,)))
    assert a.extra_phase_length() == c.extra_phase_length()


def test_noise_added_in_the_matrix_dtype_gives_the_numbers_of_the_float64_path():
    """Noisy symmetric feedback under broadcast: ``noise.added_to(M)`` (normals rounded to M's dtype,
    added in place) gives the feedback matrices of ``M + noise(shape).astype(M.dtype)``."""
    from bioplaus.models.segdend.config import Config
    from bioplaus.models.segdend.simulator import _SymmetricNoise
    from bioplaus.models.segdend.state import Weights

    cfg = Config(sizes=(20, 12, 9, 6), use_symmetric_weights=True, noisy_symmetric_weights=True,
                 use_broadcast=True)
    for dtype in (np.float32, np.float64):
        w = Weights.initial(cfg, np.random.default_rng(1), dtype)
        fused, plain = w.copy(), w.copy()
        fused.impose_symmetry(cfg, _SymmetricNoise(RandomStreams(np.random.default_rng(2), dtype)))
        streams = RandomStreams(np.random.default_rng(2), dtype)
        plain.impose_symmetry(cfg, lambda shape: streams.normal(0.05, shape))
        for a, b in zip(fused.YT, plain.YT):
            assert a.dtype == dtype and a.tobytes() == b.tobytes()


def _splitmix_numpy(key, i):
    """SplitMix64 output ``i`` of ``key`` (Steele, Lea & Flood 2014), in NumPy's wrapping uint64."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (np.asarray(i, np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def test_uniforms_are_the_top_bits_of_splitmix64_exactly():
    """The compiled streams form their 53-bit uniforms from the bits of each output (no integer
    conversion): they equal ``(z >> 11) 2^-53`` (spikes) and ``((z >> 11) + 1/2) 2^-53`` (normals)
    to the last bit, the rounding of the half included."""
    from bioplaus.models.segdend import _kernel

    key, start, n = np.uint64(0xDEADBEEF12345678), 3 * 2**40 + 11, 200_001
    k = _splitmix_numpy(key, np.arange(start, start + n, dtype=np.uint64)) >> np.uint64(11)
    spikes = np.empty(n)
    _kernel.fill_uniforms(key, start, 53, spikes)
    np.testing.assert_array_equal(spikes, k.astype(np.float64) * 2.0**-53)
    k24 = _splitmix_numpy(key, np.arange(start, start + n, dtype=np.uint64)) >> np.uint64(40)
    _kernel.fill_uniforms(key, start, 24, spikes)
    np.testing.assert_array_equal(spikes, k24.astype(np.float64) * 2.0**-24)
    # normals: the quantile of the centred uniform, whatever path (central or tail) it takes
    kn = _splitmix_numpy(key, np.uint64(_noise.NORMAL_OFFSET) + np.arange(n, dtype=np.uint64)) >> np.uint64(11)
    u = (kn.astype(np.float64) + 0.5) * 2.0**-53  # the sum rounds (k >= 2^52) as the compiled one must
    want = np.empty(n)
    _noise.normal_quantile(u, want)
    got = np.empty(n)
    _noise.fill_normal(key, 0, 1.0, got)
    np.testing.assert_array_equal(got, want)
