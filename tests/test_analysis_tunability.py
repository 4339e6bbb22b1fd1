"""Tunability (Probst et al. 2019): d, tuning risk on a constructed case, planted per-parameter shares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bioplaus.analysis.tunability import tunability, tunability_shares, tuning_risk

from synthetic_trials import DEFAULT, PLANTED, accuracy_rows, planted_accuracy, planted_trials

SPECS = {"planted": PLANTED}


def _repeats(values, model="planted", source="default", dataset="mnist"):
    return accuracy_rows(values, model=model, dataset=dataset, source=source,
                         repeat=np.arange(len(values)))


def test_tuning_risk_on_a_constructed_case():
    random = [0.1, 0.2, 0.5, 0.6, 0.9]
    risk = tuning_risk(random, 0.55)
    assert risk["risk_probability"] == pytest.approx(3 / 5)          # 0.1, 0.2, 0.5 below
    assert risk["risk_shortfall"] == pytest.approx((0.45 + 0.35 + 0.05) / 5)
    assert risk["risk_conditional"] == pytest.approx((0.45 + 0.35 + 0.05) / 3)
    assert tuning_risk(random, 0.05) == {"risk_probability": 0.0, "risk_shortfall": 0.0,
                                         "risk_conditional": 0.0}
    assert np.isnan(tuning_risk(random, np.nan)["risk_probability"])


def test_tunability_table_from_trials_and_repeats():
    trials = pd.concat([accuracy_rows([0.1, 0.2, 0.5, 0.6, 0.9], model="planted"),
                        accuracy_rows([0.95, 0.3], model="planted", sampler="gp")], ignore_index=True)
    repeats = pd.concat([_repeats([0.5, 0.6]), _repeats([0.9, 0.92], source="best_gp"),
                         _repeats([0.8, 0.82], source="best_random")], ignore_index=True)
    row = tunability(trials, repeats, specs=SPECS).iloc[0]
    assert row["default"] == pytest.approx(0.55) and row["n_default"] == 2
    assert row["default_sd"] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    assert row["best"] == pytest.approx(0.95)                 # over every sampler
    assert row["best_refit"] == pytest.approx(0.91)           # best of the refitted best_* means
    assert row["d"] == pytest.approx(0.40) and row["d_refit"] == pytest.approx(0.36)
    assert row["risk_probability"] == pytest.approx(0.6)      # random sampler only
    assert row["n_random"] == 5 and bool(row["default_in_space"])
    # without repeats: no measured default
    assert np.isnan(tunability(trials, None, specs=SPECS).iloc[0]["d"])


def test_planted_parameter_takes_the_tunability_share():
    trials, points = planted_trials(80, seed=0)
    default_accuracy = float(planted_accuracy([DEFAULT])[0])  # 0.26
    repeats = _repeats(default_accuracy + np.array([-0.005, 0.0, 0.005]))
    shares = tunability_shares(trials, repeats, specs=SPECS, seed=0).set_index("param")
    assert shares.loc["a", "share"] > 0.8
    assert shares.loc["a", "best_value"] > 0.8
    others = shares.drop(index="a")
    assert (others["share"].abs() < 0.1).all(), others["share"]
    # inactive at the default and changing nothing else: tuning it alone does nothing
    for name in ("g", "w_2", "w_3"):
        assert not shares.loc[name, "active_at_default"]
        assert shares.loc[name, "d_param"] == 0.0
    assert shares.loc["g", "n_active"] == int(trials["param_gate"].sum())
    assert (shares["n_random"] == 80).all()
    # the marginal reading credits every parameter with E[f] - f(default) > 0 here
    assert (shares["share_marginal"].drop(index=["a"]) > 0.3).all()


def test_the_surrogates_own_d_is_reported_beside_the_share():
    trials, _ = planted_trials(80, seed=0)
    repeats = _repeats([0.26, 0.26])
    shares = tunability_shares(trials, repeats, specs=SPECS, seed=0)
    d = shares["d_surrogate"].iloc[0]
    assert (shares["d_surrogate"] == d).all()
    # the planted parameter's gain is most of the surrogate's own d (the others sit at the default)
    assert shares.set_index("param").loc["a", "d_param"] == pytest.approx(d, rel=0.2)
