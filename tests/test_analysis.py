"""Tables and statistics: exact values on hand-made frames, the 2019 reference table."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from bioplaus import analysis
from bioplaus.analysis import (
    compare,
    importance,
    learning_table,
    learns_curve,
    load_trials,
    noise_table,
    summarize,
    wilson_interval,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _trials(rows, **fixed):
    """A trials.csv-shaped frame from (accuracy, extra-dict) rows."""
    records = []
    for number, (accuracy, extra) in enumerate(rows):
        record = {"dataset": "mnist", "model": "segdend", "sampler": "random", "number": number,
                  "state": "COMPLETE", "value": accuracy, "accuracy": accuracy,
                  "fit_seconds": 10.0 + number, "duration_seconds": 12.0 + number,
                  "diverged": False, "censored": False, "invalid": False, "message": "",
                  "seed": number, "n_classes": 10, "chance": 0.1}
        record.update(fixed)
        record.update(extra)
        records.append(record)
    return pd.DataFrame(records)


# ----------------------------------------------------------------------------- load_trials
def test_load_trials_fixes_dtypes_and_drops_unknown_columns(tmp_path):
    csv = tmp_path / "trials.csv"
    csv.write_text(
        "dataset,model,sampler,number,state,value,accuracy,accuracy_fold_2,accuracy_fold_1,"
        "fit_seconds,diverged,timed_out,invalid,message,seed,n_classes,chance,"
        "param_use_conductances,param_dt,junk\n"
        "mnist,segdend,random,0,COMPLETE,0.5,0.5,0.4,0.6,3.0,False,False,False,,1,10,0.1,True,0.5,x\n"
        "mnist,segdend,random,1,COMPLETE,0.0,,,,1.0,False,False,True,bad combo,2,10,0.1,False,0.2,y\n"
        "mnist,segdend,random,2,FAIL,,,,,,,,,crash,3,10,0.1,True,0.3,z\n"
    )
    trials = load_trials([csv])
    assert "junk" not in trials.columns
    # an older table's timed_out is read as censored (the flag's name since)
    assert "timed_out" not in trials.columns and trials["censored"].dtype == bool
    assert trials["invalid"].dtype == bool and trials["invalid"].tolist() == [False, True, False]
    assert trials["diverged"].tolist() == [False, False, False]  # blank -> False
    assert trials["param_use_conductances"].dtype == bool
    assert trials["message"].tolist() == ["", "bad combo", "crash"]
    assert (trials["source"] == "ours").all()
    # fold columns in numeric order, params last
    columns = list(trials.columns)
    assert columns.index("accuracy_fold_1") < columns.index("accuracy_fold_2")
    assert columns[-2:] == ["param_dt", "param_use_conductances"]


def test_load_trials_keeps_booleans_across_models(tmp_path):
    segdend = _trials([(0.5, {"param_use_conductances": True}),
                       (0.6, {"param_use_conductances": False})])
    mlp = _trials([(0.9, {"param_learning_rate": 0.01})], model="mlp")
    empty_column = _trials([(0.8, {"param_use_conductances": None})], model="cnn")
    paths = []
    for name, frame in (("a", segdend), ("b", mlp), ("c", empty_column)):
        paths.append(tmp_path / f"{name}.csv")
        frame.to_csv(paths[-1], index=False)
    trials = load_trials(paths)
    assert str(trials["param_use_conductances"].dtype) == "boolean"
    assert trials["param_use_conductances"].tolist()[:2] == [True, False]
    assert trials["param_use_conductances"].isna().tolist() == [False, False, True, True]
    assert trials["param_learning_rate"].dtype == np.float64


def test_load_trials_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset,model\nmnist,mlp\n")
    with pytest.raises(ValueError, match="bad.csv: missing column"):
        load_trials(bad)
    with pytest.raises(FileNotFoundError):
        load_trials(tmp_path / "absent.csv")


# ----------------------------------------------------------------------------- summarize
def test_summarize_exact_values():
    trials = pd.concat([
        _trials([
            (0.10, {}),                  # at chance
            (0.115, {"diverged": True}),  # at chance, diverged: counted with its accuracy
            (0.30, {}),                  # learns
            (0.80, {}),                  # learns, near best (best 0.82 -> >= 0.77)
            (0.82, {}),                  # best
            (0.99, {"censored": True}),  # cut short by the time limit: counted, in no statistic
            (np.nan, {"invalid": True, "value": 0.0}),
            (np.nan, {"state": "FAIL"}),
            (np.nan, {"state": "RUNNING"}),
        ]),
        _trials([(0.85, {}), (0.50, {})], sampler="gp"),  # gp's best 0.85 sets "near best"
    ], ignore_index=True)
    table = summarize(trials).set_index("sampler")
    row = table.loc["random"]
    acc = np.array([0.10, 0.115, 0.30, 0.80, 0.82])
    assert row["source"] == "ours"
    assert (row["n"], row["n_invalid"], row["n_censored"], row["n_diverged"], row["n_failed"]) == (
        5, 1, 1, 1, 1)
    assert row["min"] == 0.10 and row["max"] == 0.82 and row["median"] == 0.30
    assert row["q25"] == pytest.approx(0.115) and row["q75"] == pytest.approx(0.80)
    assert row["mean"] == pytest.approx(acc.mean())
    assert row["std"] == pytest.approx(acc.std(ddof=1))
    assert row["frac_at_chance"] == pytest.approx(2 / 5)
    assert row["frac_learns"] == pytest.approx(3 / 5)
    low, high = wilson_interval(3, 5)  # the interval of the fraction of these 5, not of all 8 trials
    assert (row["frac_learns_lo"], row["frac_learns_hi"]) == pytest.approx((float(low), float(high)))
    # the median's bootstrap interval lies within the data, brackets the median, and is reproducible
    assert 0.10 <= row["median_lo"] <= 0.30 <= row["median_hi"] <= 0.82 and row["median_lo"] < row["median_hi"]
    again = summarize(trials).set_index("sampler").loc["random"]
    assert (again["median_lo"], again["median_hi"]) == (row["median_lo"], row["median_hi"])
    assert row["frac_near_best"] == pytest.approx(2 / 5)  # >= 0.85 - 0.05 = 0.80
    assert row["best"] == 0.82 and row["best_number"] == 4
    assert row["median_fit_seconds"] == pytest.approx(np.median(10.0 + np.arange(5)))
    gp = table.loc["gp"]
    assert gp["n"] == 2 and gp["frac_near_best"] == 0.5 and gp["best_number"] == 0


def test_summarize_uses_each_rows_chance():
    trials = _trials([(0.55, {}), (0.62, {}), (0.70, {})], n_classes=2, chance=0.5)
    row = summarize(trials).iloc[0]
    # at chance: < 0.52 -> none; learns: >= 0.60 -> 2 of 3
    assert row["frac_at_chance"] == 0.0
    assert row["frac_learns"] == pytest.approx(2 / 3)


def test_summarize_noise_floor_from_repeats():
    trials = _trials([(0.5, {}), (0.6, {})])
    repeats = pd.DataFrame({
        "dataset": "mnist", "model": "segdend",
        "source": ["default"] * 3 + ["best_gp"] * 3 + ["best_random"] * 3 + ["best_tpe"],
        "repeat": [0, 1, 2] * 3 + [0],
        "accuracy": [0.80, 0.82, 0.84, 0.90, 0.90, 0.90, 0.50, 0.60, 0.70, 0.10],
        "invalid": False, "chance": 0.1,
    })
    reference = _trials([(0.7, {})], source="2019", sampler="gp")
    table = summarize(pd.concat([trials, reference]), repeats=repeats).set_index("source")
    ours = table.loc["ours"]
    sd_default, sd_gp, sd_random = 0.02, 0.0, 0.1  # ddof=1 of each source's 3 repeats
    assert ours["noise_sd_default"] == pytest.approx(sd_default)
    assert ours["noise_sd_best"] == pytest.approx(np.median([sd_gp, sd_random]))  # tpe: 1 repeat
    assert ours["noise_sd"] == pytest.approx(np.median([sd_default, sd_gp, sd_random]))
    assert np.isnan(table.loc["2019", "noise_sd"])  # our refits say nothing of the 2019 runs


def _study_table():
    """(model, dataset) -> (min, q25, median, q75, max, seconds) from design/study.md."""
    text = (SHARED / "design" / "study.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and re.fullmatch(r"\d+", cells[2]):
            seconds = float(re.match(r"[\d,]+", cells[8]).group(0).replace(",", ""))
            rows[(cells[0], cells[1])] = tuple(float(c) for c in cells[3:8]) + (seconds,)
    return rows


@pytest.mark.skipif(not (SHARED / "reference").is_dir(), reason="../shared not available")
def test_summarize_matches_reference_table():
    from bioplaus.analysis.reference import load_reference_logs

    expected = _study_table()
    assert len(expected) == 9
    table = summarize(load_reference_logs(SHARED / "reference"))
    names = {"mlp": "dnn", "cnn": "cnn", "segdend": "comp_dnn"}
    for row in table.itertuples():
        key = (names[row.model], row.dataset)
        lo, q25, median, q75, hi, seconds = expected[key]
        got = tuple(round(v, 3) for v in (row.min, row.q25, row.median, row.q75, row.max))
        assert got == (lo, q25, median, q75, hi), key
        assert round(row.median_duration_seconds) == seconds, key
        assert row.source == "2019" and row.sampler == "gp"


def test_old_and_new_tables_read_the_same_censored_flag(tmp_path):
    new = _trials([(0.5, {}), (0.9, {"censored": True})])
    old = new.rename(columns={"censored": "timed_out"}).assign(dataset="digits")
    paths = [tmp_path / "new.csv", tmp_path / "old.csv"]
    new.to_csv(paths[0], index=False)
    old.to_csv(paths[1], index=False)
    trials = load_trials(paths)
    assert trials["censored"].tolist() == [False, True, False, True]
    table = summarize(old).iloc[0]  # an in-memory frame with the old name too
    assert (table["n"], table["n_censored"], table["max"]) == (1, 1, 0.5)


# ----------------------------------------------------------------------------- censored
def _with_planted_censored():
    """Random-sampler trials of two models and a noise floor, plus censored rows whose
    (partial) accuracies would change every statistic if they were counted."""
    rng = np.random.default_rng(4)
    clean = []
    for model, level in (("segdend", 0.3), ("mlp", 0.8)):
        frame = _trials([(float(np.clip(level + rng.normal(0, 0.15), 0.05, 1.0)), {}) for _ in range(14)],
                        model=model)
        frame["param_learning_rate"] = np.exp(rng.uniform(np.log(1e-4), np.log(0.05), len(frame)))
        frame["accuracy_epoch_1"] = frame["accuracy"] / 2
        frame["accuracy_epoch_2"] = frame["accuracy"]
        clean.append(frame)
    clean = pd.concat(clean, ignore_index=True)
    planted = clean.iloc[[0, 1, 14, 15]].copy()
    planted["number"] += 100
    planted["censored"] = True
    planted["accuracy"] = [0.99, 0.98, 0.02, 0.03]
    planted["param_learning_rate"] = [0.05, 0.05, 1e-4, 1e-4]
    planted["accuracy_epoch_1"] = [0.97, 0.96, 0.01, 0.02]
    planted["accuracy_epoch_2"] = np.nan  # stopped inside epoch 2
    return clean, pd.concat([clean, planted], ignore_index=True)


def test_censored_trials_enter_no_statistic():
    clean, planted = _with_planted_censored()
    space = {"learning_rate": FloatDistribution(1e-4, 0.05, log=True)}
    pd.testing.assert_frame_equal(summarize(planted).drop(columns="n_censored"),
                                  summarize(clean).drop(columns="n_censored"))
    assert summarize(planted)["n_censored"].tolist() == [2, 2]
    grid = np.linspace(0.1, 1.0, 10)
    pd.testing.assert_frame_equal(learns_curve(planted, grid), learns_curve(clean, grid))
    pd.testing.assert_frame_equal(learning_table(planted), learning_table(clean))
    pd.testing.assert_frame_equal(compare(planted, n_boot=200), compare(clean, n_boot=200))
    pd.testing.assert_frame_equal(importance(planted, {"segdend": space, "mlp": space}, inactive=None),
                                  importance(clean, {"segdend": space, "mlp": space}, inactive=None))
    repeats = planted.assign(source="default", repeat=np.arange(len(planted)))
    pd.testing.assert_frame_equal(noise_table(repeats),
                                  noise_table(clean.assign(source="default", repeat=np.arange(len(clean)))))


def test_learning_table_per_epoch_metrics():
    trials = _trials([(0.9, {"accuracy_epoch_1": 0.15, "accuracy_epoch_2": 0.9}),
                      (0.5, {"accuracy_epoch_1": 0.3, "accuracy_epoch_2": 0.5}),
                      (0.1, {"accuracy_epoch_1": 0.1, "accuracy_epoch_2": 0.1}),
                      (0.12, {"diverged": True, "accuracy_epoch_1": 0.12, "accuracy_epoch_2": 0.12}),
                      (np.nan, {"invalid": True})])
    table = learning_table(trials).set_index("epoch")
    assert table["n"].tolist() == [4, 4]
    assert table["frac_learns"].tolist() == [0.25, 0.5]  # >= 0.2: 0.3; then 0.9 and 0.5
    assert table["frac_at_chance"].tolist() == [0.25, 0.25]  # < chance + 0.02 = 0.12: only 0.1
    assert table.loc[2, "median"] == pytest.approx(0.31)
    # the last epoch holds the end-point metrics
    end = summarize(trials).iloc[0]
    assert table.loc[2, "frac_learns"] == end["frac_learns"] and table.loc[2, "median"] == end["median"]
    # 95% Wilson interval of 2/4 (Wilson 1927): centre (0.5 + z²/8) / (1 + z²/4) = 0.5,
    # half-width z sqrt(1/16 + z²/64) / (1 + z²/4)
    z = 1.959963984540054
    half = z * np.sqrt(0.25 / 4 + z**2 / 64) / (1 + z**2 / 4)
    assert table.loc[2, "frac_learns_lo"] == pytest.approx(0.5 - half)
    assert table.loc[2, "frac_learns_hi"] == pytest.approx(0.5 + half)
    assert learning_table(_trials([(0.5, {})])).empty  # no per-epoch columns: no rows


# ----------------------------------------------------------------------------- learns curve
def test_learns_curve_fractions():
    trials = _trials([(0.1, {}), (0.5, {}), (0.5, {}), (0.9, {}),
                      (np.nan, {"invalid": True})])
    curve = learns_curve(trials, [0.0, 0.5, 0.51, 0.9, 1.0])
    assert curve["fraction"].tolist() == [1.0, 0.75, 0.25, 0.25, 0.0]
    assert (curve["n"] == 4).all()


# ----------------------------------------------------------------------------- importance
def _random_space_trials(n, seed=0):
    rng = np.random.default_rng(seed)
    strong = np.exp(rng.uniform(np.log(1e-4), np.log(0.05), n))
    frame = _trials([(0.0, {}) for _ in range(n)])
    frame["param_learning_rate"] = strong
    frame["param_num_layers"] = rng.integers(1, 7, n)
    frame["param_use_broadcast"] = np.where(rng.random(n) < 0.5, "True", "False")  # CSV strings
    frame["param_dt"] = rng.uniform(0.1, 1.0, n)
    # accuracy depends on the learning rate only
    frame["accuracy"] = 0.1 + 0.8 * (np.log10(strong) + 4) / np.log10(500) + rng.normal(0, 0.005, n)
    space = {
        "learning_rate": FloatDistribution(1e-4, 0.05, log=True),
        "num_layers": IntDistribution(1, 6),
        "use_broadcast": CategoricalDistribution([False, True]),
        "dt": FloatDistribution(0.1, 1.0),
    }
    return frame, space


def test_importance_ranks_planted_parameter_first():
    trials, space = _random_space_trials(40)
    # invalid trials (outside any sensible value) are excluded, not fed to the evaluators
    invalid = trials.iloc[:3].assign(invalid=True, accuracy=np.nan, param_dt=99.0)
    table = importance(pd.concat([trials, invalid], ignore_index=True), space, seed=0, inactive=None)
    assert set(table["evaluator"]) == {"fanova", "ped_anova"}
    assert (table["n_trials"] == 40).all()
    for evaluator, group in table.groupby("evaluator"):
        ranked = group.sort_values("importance", ascending=False)
        assert ranked["param"].iloc[0] == "learning_rate", evaluator
        assert ranked["importance"].iloc[0] > 0.5
        assert group["importance"].sum() == pytest.approx(1.0)
        assert set(group["param"]) == set(space)


def test_importance_leaves_optuna_logging_alone(monkeypatch):
    import optuna

    trials, space = _random_space_trials(20)
    before = optuna.logging.get_verbosity()
    calls = []
    monkeypatch.setattr(optuna.logging, "set_verbosity", calls.append)
    importance(trials, space, seed=0, inactive=None)
    assert calls == []  # library code does not change global logging state
    assert optuna.logging.get_verbosity() == before


def test_importance_refuses_optimiser_trials_and_tiny_samples():
    trials, space = _random_space_trials(12)
    with pytest.raises(ValueError, match="random"):
        importance(trials.assign(sampler="gp"), space, inactive=None)
    with pytest.raises(ValueError, match="need at least 10"):
        importance(trials.iloc[:5], space, inactive=None)
    with pytest.raises(ValueError, match="no trials"):
        importance(trials.iloc[:0], space, inactive=None)
    with pytest.raises(ValueError, match="param_dt"):
        importance(trials.drop(columns="param_dt"), space, inactive=None)


# ----------------------------------------------------------------------------- compare
def _two_models(reference_acc, other_acc, sampler="random"):
    return pd.concat([
        _trials([(a, {}) for a in reference_acc], sampler=sampler),
        _trials([(a, {}) for a in other_acc], model="mlp", sampler=sampler),
    ], ignore_index=True)


def test_compare_mann_whitney_and_effect_size_by_hand():
    result = compare(_two_models([0.1, 0.2, 0.3], [0.4, 0.5, 0.6]), n_boot=200).iloc[0]
    # every reference value below every other value: U = 0, r = -1,
    # exact two-sided p = 2 / C(6, 3) = 0.1
    assert result["model"] == "mlp" and result["reference_model"] == "segdend"
    assert result["U"] == 0.0 and result["rank_biserial"] == -1.0
    assert result["p"] == pytest.approx(0.1)
    assert result["median_reference"] == pytest.approx(0.2)
    assert result["median_other"] == pytest.approx(0.5)
    assert result["median_diff"] == pytest.approx(-0.3)
    assert result["learns_reference"] == pytest.approx(2 / 3)  # 0.2, 0.3 >= chance + 0.1
    assert result["learns_other"] == 1.0

    # interleaved: pairs (ref > other) = (3>2), (5>2), (5>4) = 3 of 6 -> U = 3, r = 0, p = 1
    result = compare(_two_models([0.1, 0.3, 0.5], [0.2, 0.4]), n_boot=200).iloc[0]
    assert result["U"] == 3.0 and result["rank_biserial"] == 0.0
    assert result["p"] == pytest.approx(1.0)


def test_compare_bootstrap_intervals():
    # constant groups: every bootstrap replicate equals the estimate
    result = compare(_two_models([0.1] * 6, [0.9] * 8), n_boot=500).iloc[0]
    for name, value in (("median_reference", 0.1), ("median_other", 0.9),
                        ("median_diff", -0.8), ("learns_reference", 0.0),
                        ("learns_other", 1.0), ("learns_diff", -1.0)):
        assert result[name] == pytest.approx(value)
        assert result[f"{name}_lo"] == pytest.approx(value)
        assert result[f"{name}_hi"] == pytest.approx(value)
    # half learns, half at chance: the learns fraction of a resample of 10 is
    # Binomial(10, 0.5) / 10, whose 2.5% and 97.5% quantiles are 0.2 and 0.8;
    # the median of a resample is 0.1, 0.5 or 0.9
    result = compare(_two_models([0.1] * 5 + [0.9] * 5, [0.9] * 4), n_boot=2000, seed=3).iloc[0]
    assert result["learns_reference_lo"] == pytest.approx(0.2)
    assert result["learns_reference_hi"] == pytest.approx(0.8)
    assert result["median_reference_lo"] == pytest.approx(0.1)
    assert result["median_reference_hi"] == pytest.approx(0.9)
    assert result["learns_diff_lo"] == pytest.approx(-0.8)
    assert result["learns_diff_hi"] == pytest.approx(-0.2)


def test_compare_filters_sampler_and_skips_datasets_without_reference():
    trials = pd.concat([
        _two_models([0.1, 0.2], [0.8, 0.9]),
        _two_models([0.95, 0.96], [0.1, 0.2], sampler="gp"),  # ignored by default
        _trials([(0.5, {})], dataset="cifar10", model="mlp"),  # no segdend on cifar10
    ], ignore_index=True)
    table = compare(trials, n_boot=100)
    assert table["dataset"].tolist() == ["mnist"]
    assert table["rank_biserial"].iloc[0] == -1.0
    gp = compare(trials, sampler="gp", n_boot=100)
    assert gp["rank_biserial"].iloc[0] == 1.0
    pooled = compare(trials, sampler=None, n_boot=100)
    assert pooled["n_reference"].iloc[0] == 4


def test_definitions_are_module_constants():
    assert (analysis.AT_CHANCE_MARGIN, analysis.LEARNS_MARGIN, analysis.NEAR_BEST_MARGIN) == (
        0.02, 0.10, 0.05)
    assert analysis.at_chance([0.119, 0.12], 0.1).tolist() == [True, False]
    assert analysis.learns([0.199, 0.2], 0.1).tolist() == [False, True]


# ----------------------------------------------------------------------------- command line
ANALYSIS_COMMANDS = {"summarize", "figure", "importance", "sensitivity", "compare"}


def _subcommands(parser):
    import argparse

    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def test_cli_has_the_analysis_commands():
    from bioplaus.cli import build_parser

    assert ANALYSIS_COMMANDS <= _subcommands(build_parser())


def test_cli_fails_loudly_when_the_analysis_commands_cannot_be_imported(monkeypatch):
    import sys

    import bioplaus.cli
    from bioplaus.cli import build_parser

    # make ``from bioplaus.cli import analysis`` fail as a broken module would
    monkeypatch.delattr(bioplaus.cli, "analysis", raising=False)
    monkeypatch.setitem(sys.modules, "bioplaus.cli.analysis", None)
    with pytest.raises(ImportError, match="analysis"):
        build_parser()


def test_analysis_package_does_not_import_the_study_layer_or_the_cli():
    import subprocess
    import sys

    code = (
        "import sys, bioplaus.analysis, bioplaus.analysis.figures, bioplaus.analysis.reference\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('bioplaus.study', 'bioplaus.cli')))\n"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_no_model_is_drawn_in_the_black_of_the_figures_keys():
    """Keys (line styles of the alignment figure, medians, markers) are black: no model colour is."""
    from bioplaus.analysis.figures import model_color
    from bioplaus.models import available_models
    models = available_models() + [f"extra-{i}" for i in range(20)]
    assert all(model_color(m, models).lower() not in ("#000000", "black", "k") for m in models)
