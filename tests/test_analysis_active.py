"""Inactive parameters are kept out: activity table, n_active, importance and sensitivity panels."""

from __future__ import annotations

import numpy as np
import pytest

from bioplaus.analysis import active
from bioplaus.analysis.active import REGISTRY, active_matrix, n_active, resolve_inactive
from bioplaus.analysis.figures import plot_sensitivity
from bioplaus.analysis.importance import importance
from bioplaus.models import get_model

from synthetic_trials import SPACE, planted_inactive, planted_trials


def test_active_matrix_and_counts_by_hand():
    trials, points = planted_trials(40, seed=1)
    matrix = active_matrix(trials, SPACE, inactive=planted_inactive)
    layers = np.array([p["n_layers"] for p in points])
    gate = np.array([p["gate"] for p in points])
    assert matrix["w_1"].all() and matrix["a"].all()
    assert (matrix["w_2"].to_numpy() == (layers >= 2)).all()
    assert (matrix["w_3"].to_numpy() == (layers >= 3)).all()
    assert (matrix["g"].to_numpy() == gate).all()
    counts = n_active(trials, SPACE, inactive=planted_inactive)
    assert counts["w_3"] == (layers == 3).sum() and counts["g"] == gate.sum() and counts["b"] == 40
    # CSV strings for the switch are read through the space ("False" is not truthy here)
    as_text = trials.assign(param_gate=trials["param_gate"].map(str))
    assert (active_matrix(as_text, SPACE, inactive=planted_inactive)["g"] == matrix["g"]).all()
    # None: every parameter active
    assert active_matrix(trials, SPACE, inactive=None).all().all()


def test_registry_rules_and_clear_errors():
    segdend = get_model("segdend")
    assert resolve_inactive("segdend") is segdend.inactive
    assert resolve_inactive("not-a-model") is None  # unknown: all active
    with pytest.raises(ValueError, match="inactive must be"):
        resolve_inactive("segdend", "sometimes")
    point = dict(segdend.default_params)
    assert active.active_set(point, segdend.inactive) == segdend.active_params(point)
    with pytest.raises(ValueError, match="update_feedback_weights"):
        active.active_set({"num_layers": 2}, segdend.inactive, model="segdend")
    assert REGISTRY == "registry"


def test_importance_counts_and_scores_only_active_trials():
    trials, points = planted_trials(60, seed=2)
    table = importance(trials, SPACE, inactive=planted_inactive, seed=0)
    counts = n_active(trials, SPACE, inactive=planted_inactive)
    for row in table.itertuples():
        assert row.n_active == counts[row.param] and row.n_trials == 60
    fanova = table[table["evaluator"] == "fanova"].set_index("param")
    assert fanova["importance"].idxmax() == "a"
    # a parameter active in too few trials is not scored, but still listed with its count
    few = trials.copy()
    few["param_n_layers"] = [3 if i < 4 else 1 for i in range(60)]
    table = importance(few, SPACE, inactive=planted_inactive, seed=0, min_active=8)
    w3 = table[(table["param"] == "w_3")]
    assert (w3["n_active"] == 4).all() and w3["importance"].isna().all()
    assert table.groupby("evaluator")["importance"].sum().round(9).eq(1.0).all()


def test_inactive_values_do_not_enter_the_importance_of_their_parameter():
    """g does nothing; where it is inactive (gate off) its ignored values track accuracy by construction.

    Scored over all trials g looks important; over the trials where it is
    active (gate on: accuracy is noise) it must not.
    """
    rng = np.random.default_rng(3)
    trials, points = planted_trials(80, seed=3)
    gate = trials["param_gate"].to_numpy(dtype=bool)
    u = rng.uniform(0, 1, 80)
    trials["accuracy"] = np.where(gate, 0.5 + rng.normal(0, 0.01, 80), 0.3 + 0.4 * u)
    trials.loc[~gate, "param_g"] = u[~gate]
    conditional = importance(trials, SPACE, inactive=planted_inactive, seed=0)
    naive = importance(trials, SPACE, inactive=None, seed=0)

    def g_score(table, evaluator="fanova", column="raw"):
        rows = table[(table["evaluator"] == evaluator) & (table["param"] == "g")]
        return float(rows[column].iloc[0])

    assert g_score(naive) > 0.3
    assert g_score(conditional) < g_score(naive) / 3
    assert g_score(naive, column="importance") > 0.5
    assert g_score(conditional, column="n_active") == gate.sum()


def test_sensitivity_panels_use_and_mark_active_trials(tmp_path):
    trials, points = planted_trials(30, seed=4)
    saved = plot_sensitivity(trials, SPACE, tmp_path / "sens", inactive=planted_inactive)
    counts = n_active(trials, SPACE, inactive=planted_inactive)
    panels = {ax.get_title(): ax for ax in saved.figure.axes if ax.get_visible()}
    for name in ("w_2", "w_3", "g"):
        ax = panels[name]
        texts = [t.get_text() for t in ax.texts]
        assert f"active in {counts[name]}/30" in texts
        drawn = sum(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets"))
        assert drawn == counts[name]
    assert not panels["a"].texts  # always active: no mark


def test_a_parameter_not_scored_on_the_sample_gets_no_interval():
    trials, _ = planted_trials(40, seed=7)
    trials["param_n_layers"] = [3 if i < 6 else 1 for i in range(40)]  # w_3 active in 6 trials
    table = importance(trials, SPACE, inactive=planted_inactive, seed=0, n_boot=6, min_active=8)
    w3 = table[table["param"] == "w_3"]
    assert w3[["importance", "lo", "hi"]].isna().all().all()
