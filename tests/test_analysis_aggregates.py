"""IQM and probability of improvement (Agarwal et al. 2021): values by hand and bootstrap coverage;
the comparison of every rule against every backprop baseline; colours for many models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from bioplaus.analysis import figures
from bioplaus.analysis.aggregates import (
    improvement_table,
    iqm,
    iqm_table,
    probability_of_improvement,
    stratified_iqm,
)
from bioplaus.analysis.statistics import compare, comparison_pairs, is_backprop

from synthetic_trials import accuracy_rows


def test_iqm_and_probability_by_hand():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(np.mean([3, 4, 5, 6]))
    assert probability_of_improvement([0.5, 0.7], [0.5, 0.6]) == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    trials = pd.concat([
        accuracy_rows([0.2, 0.4, 0.6, 0.8], model="a"), accuracy_rows([0.1, 0.3], model="b"),
        accuracy_rows([0.9, 0.9], model="a", dataset="fashion"),
        accuracy_rows([0.9, 0.1], model="b", dataset="fashion"),
    ], ignore_index=True).assign(source="ours")
    table = iqm_table(trials, n_boot=200).set_index(["model", "dataset"])
    assert table.loc[("a", "mnist"), "iqm"] == pytest.approx(0.5)
    assert table.loc[("a", "all"), "iqm"] == pytest.approx(iqm([0.2, 0.4, 0.6, 0.8, 0.9, 0.9]))
    assert table.loc[("a", "all"), "n_datasets"] == 2 and table.loc[("a", "all"), "n"] == 6
    improvement = improvement_table(trials, n_boot=200).set_index(["model_a", "model_b"])
    # mnist: a beats b in 7 of 8 pairs; fashion: 0.9 vs (0.9, 0.1): (0.5 + 1) / 2 per a-value
    assert improvement.loc[("a", "b"), "probability"] == pytest.approx((7 / 8 + 0.75) / 2)
    assert improvement.loc[("b", "a"), "probability"] == pytest.approx(1 - (7 / 8 + 0.75) / 2)


def _mixture_iqm(means, sd):
    """Population IQM of the equal mixture of normals: E[X | q25 < X < q75]."""
    cdf = lambda x: np.mean([norm.cdf(x, m, sd) for m in means])  # noqa: E731
    low = brentq(lambda x: cdf(x) - 0.25, -10, 10)
    high = brentq(lambda x: cdf(x) - 0.75, -10, 10)
    partial = 0.0
    for m in means:
        a, b = (low - m) / sd, (high - m) / sd
        partial += m * (norm.cdf(b) - norm.cdf(a)) + sd * (norm.pdf(a) - norm.pdf(b))
    return partial / len(means) / 0.5


def test_stratified_bootstrap_iqm_interval_covers_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    means, sd, per = [0.3, 0.5, 0.7], 0.1, 40
    truth = _mixture_iqm(means, sd)
    hits = 0
    for _ in range(200):
        strata = [rng.normal(m, sd, per) for m in means]
        _, replicates = stratified_iqm(strata, 500, rng)
        low, high = np.percentile(replicates, [2.5, 97.5])
        hits += low <= truth <= high
    assert 0.89 <= hits / 200 <= 0.99, hits


def test_probability_of_improvement_interval_covers_at_the_nominal_rate():
    rng = np.random.default_rng(1)
    shifts = {"mnist": 0.05, "fashion": -0.02}
    sd, per = 0.1, 25
    truth = np.mean([norm.cdf(s / (np.sqrt(2) * sd)) for s in shifts.values()])
    hits = 0
    for sim in range(200):
        frames = []
        for dataset, shift in shifts.items():
            frames.append(accuracy_rows(rng.normal(0.5 + shift, sd, per), model="a", dataset=dataset))
            frames.append(accuracy_rows(rng.normal(0.5, sd, per), model="b", dataset=dataset))
        table = improvement_table(pd.concat(frames, ignore_index=True).assign(source="ours"),
                                  n_boot=300, seed=sim)
        row = table[(table["model_a"] == "a") & (table["model_b"] == "b")].iloc[0]
        hits += row["lo"] <= truth <= row["hi"]
    assert 0.89 <= hits / 200 <= 0.99, hits


SEVEN = ["mlp", "cnn", "segdend", "hebbian", "fa", "dfa", "eqprop"]


def test_compare_sets_every_rule_against_every_backprop_model():
    assert is_backprop("mlp") and is_backprop("cnn") and not is_backprop("segdend")
    assert not is_backprop("hebbian")  # unknown to the registry: a rule
    pairs = comparison_pairs(SEVEN)
    rules = ["dfa", "eqprop", "fa", "hebbian", "segdend"]
    assert pairs == [(r, b) for r in rules for b in ["cnn", "mlp"]]
    rng = np.random.default_rng(0)
    trials = pd.concat([accuracy_rows(rng.uniform(0.1, 0.9, 8), model=m) for m in SEVEN]
                       + [accuracy_rows(rng.uniform(0.1, 0.9, 8), model="segdend", dataset="fashion")],
                       ignore_index=True).assign(source="ours")
    table = compare(trials, n_boot=50)
    assert len(table) == 10  # fashion has no baseline
    assert set(zip(table["reference_model"], table["model"])) == set(pairs)
    assert table["rank_biserial"].between(-1, 1).all()
    # the old reading: one model against every other
    assert len(compare(trials, reference_model="segdend", n_boot=50)) == 6


def test_seven_models_get_distinct_colours_in_model_order():
    colours = [figures.model_color(m, SEVEN) for m in SEVEN]
    assert len(set(colours)) == 7
    assert colours[:3] == [figures.MODEL_COLORS[m] for m in ("mlp", "cnn", "segdend")]
    # deterministic: the same list gives the same colours, whatever order it is given in
    assert [figures.model_color(m, list(reversed(SEVEN))) for m in SEVEN] == colours
    many = [f"rule{i:02d}" for i in range(20)]
    styles = {(figures.model_color(m, many), figures.model_linestyle(m, many)) for m in many}
    assert len(styles) == 20
