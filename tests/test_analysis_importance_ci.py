"""Importance with uncertainty: a planted parameter dominates with an interval clear of 0;
a planted interaction is the largest pair; the functional ANOVA fractions by construction."""

from __future__ import annotations

import numpy as np
import pytest

from bioplaus.analysis.importance import importance, interactions
from bioplaus.analysis.surrogate import Surrogate, grid

from synthetic_trials import SPACE, planted_inactive, planted_trials, sample_points, trials_frame


def test_planted_parameter_dominates_with_an_interval_clear_of_zero():
    trials, _ = planted_trials(60, seed=5)
    table = importance(trials, SPACE, inactive=planted_inactive, seed=0, n_boot=15)
    for evaluator, group in table.groupby("evaluator"):
        group = group.set_index("param")
        assert group["importance"].idxmax() == "a", evaluator
        assert group.loc["a", "lo"] > 0.0, evaluator
        assert group.loc["a", "lo"] <= group.loc["a", "importance"] <= group.loc["a", "hi"]
    fanova = table[table["evaluator"] == "fanova"].set_index("param")
    assert fanova.loc["a", "lo"] > 0.8
    assert (fanova.drop(index="a")["hi"] < 0.1).all()
    # reproducible
    first, again = (importance(trials, SPACE, inactive=planted_inactive, seed=1, n_boot=2) for _ in range(2))
    assert np.allclose(first["lo"], again["lo"], equal_nan=True)


def test_main_effect_fractions_of_an_additive_function():
    """f = 2 a + b (both uniform): Var(2a) / Var(f) = 4/5, Var(b) / Var(f) = 1/5."""
    rng = np.random.default_rng(0)
    space = {k: SPACE[k] for k in ("a", "b", "lr")}
    points = sample_points(400, rng, space)
    accuracy = np.array([2 * p["a"] + p["b"] for p in points])
    surrogate = Surrogate.fit(points, accuracy, space, None, seed=0)
    assert surrogate.main_effect("a")["fraction"] == pytest.approx(0.8, abs=0.06)
    assert surrogate.main_effect("b")["fraction"] == pytest.approx(0.2, abs=0.06)
    assert surrogate.main_effect("lr")["fraction"] < 0.02
    assert surrogate.pair_effect("a", "b")["fraction"] < 0.03  # additive: no interaction


def test_grid_weights_and_quantiles():
    values, weights = grid([True, False, True, True], SPACE["gate"])
    assert values == [False, True] and weights.tolist() == [0.25, 0.75]
    values, weights = grid(list(np.linspace(0, 1, 101)), SPACE["a"], size=4)
    assert values == pytest.approx([0.125, 0.375, 0.625, 0.875]) and weights.sum() == pytest.approx(1)


def test_planted_interaction_is_the_largest_pair():
    rng = np.random.default_rng(6)
    points = sample_points(120, rng)
    accuracy = np.array([0.5 + 0.4 * (p["a"] - 0.5) * (p["b"] - 0.5) * 4 + 0.1 * p["g"] for p in points])
    trials = trials_frame(points, accuracy + rng.normal(0, 0.005, 120))
    table = interactions(trials, SPACE, inactive=planted_inactive, seed=0, n_boot=8, top=5)
    first = table.iloc[0]
    assert {first["param_1"], first["param_2"]} == {"a", "b"}
    assert first["fraction"] > 0.3 and first["lo"] > 0.1
    assert (table["fraction"].iloc[1:] < 0.1).all()
    assert first["n_active"] == 120
    g_pairs = table[(table["param_1"] == "g") | (table["param_2"] == "g")]
    assert (g_pairs["n_active"] == int(trials["param_gate"].sum())).all()
