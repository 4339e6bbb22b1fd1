"""Expected best accuracy after k trials: the U-statistic is unbiased; Dodge et al.'s is not at k ~ n."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bioplaus.analysis.trials_needed import expected_max, expected_max_curves, trials_to_reach

from synthetic_trials import accuracy_rows


def test_equals_the_mean_over_all_subsets_with_ties():
    values = np.array([0.3, 0.1, 0.5, 0.5, 0.2, 0.9])
    for k in range(1, 7):
        brute = np.mean([max(c) for c in itertools.combinations(values, k)])
        assert expected_max(values, [k])[0] == pytest.approx(brute)
    curve = expected_max(values)
    assert curve[0] == pytest.approx(values.mean()) and curve[-1] == pytest.approx(values.max())
    assert np.all(np.diff(curve) >= -1e-12)
    # with replacement (Dodge et al. eq. 1) at k = 1 is the mean as well
    assert expected_max(values, [1], replacement=True)[0] == pytest.approx(values.mean())
    with pytest.raises(ValueError, match="k must lie"):
        expected_max(values, [7])


def test_unbiased_in_simulation_against_monte_carlo_of_the_best_of_k():
    """n = 10 trials from Beta(2, 5); the truth: Monte Carlo of the best of k fresh draws."""
    rng = np.random.default_rng(0)
    n, reps = 10, 4000
    samples = rng.beta(2, 5, size=(reps, n))
    k = np.arange(1, n + 1)
    unbiased = expected_max(samples, k)                   # (reps, n)
    dodge = expected_max(samples, k, replacement=True)
    fresh = rng.beta(2, 5, size=(200_000, n))
    truth = np.array([fresh[:, :j].max(axis=1).mean() for j in k])
    truth_se = np.array([fresh[:, :j].max(axis=1).std() / np.sqrt(len(fresh)) for j in k])
    se = unbiased.std(axis=0, ddof=1) / np.sqrt(reps)
    assert np.all(np.abs(unbiased.mean(axis=0) - truth) < 4 * np.hypot(se, truth_se))
    # the with-replacement estimate repeats trials: biased low when k approaches n
    bias = truth[-1] - dodge[:, -1].mean()
    assert bias > 10 * np.hypot(dodge[:, -1].std() / np.sqrt(reps), truth_se[-1])


def test_curves_table_band_and_trials_to_reach():
    trials = accuracy_rows(np.linspace(0.2, 0.8, 12), model="mlp")
    trials = trials.assign(source="ours")
    curves = expected_max_curves(trials, n_boot=300, seed=1)
    assert curves["k"].tolist() == list(range(1, 13)) and (curves["n"] == 12).all()
    assert (curves["lo"] <= curves["expected_max"] + 1e-12).all()
    assert (curves["expected_max"] <= curves["hi"] + 1e-12).all()
    assert curves["expected_max"].iloc[-1] == pytest.approx(0.8)
    reach = trials_to_reach(curves, 0.7).iloc[0]
    first = curves.loc[curves["expected_max"] >= 0.7, "k"].min()
    assert reach["k"] == first
    assert np.isnan(trials_to_reach(curves, 0.95).iloc[0]["k"])
    # reproducible
    again = expected_max_curves(trials, n_boot=300, seed=1)
    assert np.array_equal(curves["lo"], again["lo"])
