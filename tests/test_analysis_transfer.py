"""Transfer across datasets: the regret table from evaluated rows, and the resumable evaluation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bioplaus.analysis.transfer import TRANSFER_TABLE_COLUMNS, transfer_table

from synthetic_trials import accuracy_rows


def _rows(values, *, source_dataset, dataset, model="mlp"):
    return accuracy_rows(values, model=model, dataset=dataset, source=f"from_{source_dataset}",
                         repeat=np.arange(len(values)), source_dataset=source_dataset,
                         source_sampler="gp", source_accuracy=0.9)


def test_regret_against_the_refitted_best_or_the_best_trial():
    rows = pd.concat([_rows([0.70, 0.74], source_dataset="mnist", dataset="fashion"),
                      _rows([0.50, 0.60], source_dataset="fashion", dataset="mnist")], ignore_index=True)
    repeats = accuracy_rows([0.80, 0.82], model="mlp", dataset="fashion", source="best_gp",
                            repeat=[0, 1])
    trials = accuracy_rows([0.3, 0.95], model="mlp", dataset="mnist").assign(source="ours")
    table = transfer_table(rows, trials=trials, repeats=repeats)
    assert list(table.columns) == TRANSFER_TABLE_COLUMNS
    table = table.set_index("target_dataset")
    fashion = table.loc["fashion"]
    assert fashion["accuracy"] == pytest.approx(0.72) and fashion["n_repeats"] == 2
    assert fashion["accuracy_sd"] == pytest.approx(np.std([0.70, 0.74], ddof=1))
    assert fashion["target_best"] == pytest.approx(0.81) and fashion["target_best_kind"] == "refit"
    assert fashion["regret"] == pytest.approx(0.09)
    assert fashion["regret_normalised"] == pytest.approx(0.09 / (0.81 - 0.1))
    mnist = table.loc["mnist"]  # no repeats of mnist's best: the best trial
    assert mnist["target_best_kind"] == "trial" and mnist["regret"] == pytest.approx(0.95 - 0.55)
    assert transfer_table(rows.iloc[:0]).empty
    invalid = rows.assign(invalid=rows["source_dataset"] == "fashion")
    invalid["accuracy"] = invalid["accuracy"].where(~invalid["invalid"])
    mnist = transfer_table(invalid, trials=trials).set_index("target_dataset").loc["mnist"]
    assert mnist["n_invalid"] == 2 and mnist["n_repeats"] == 0 and np.isnan(mnist["regret"])
    with pytest.raises(ValueError, match="source_dataset"):
        transfer_table(rows.drop(columns="source_dataset"))


def _best(path, accuracy, params):
    path.write_text(json.dumps({"accuracy": accuracy, "params": params}))
    return path


def test_run_transfer_evaluates_the_other_datasets_best(tmp_path):
    from bioplaus.study.transfer import best_configuration, run_transfer

    params = {"batch_size": 8, "learning_rate": 0.01, "num_layers": 1,
              **{f"h_l_{i}": 30 for i in range(1, 7)}}
    worse = {**params, "learning_rate": 0.001}
    best = {
        "mnist": {"gp": _best(tmp_path / "m_gp.json", 0.8, worse),
                  "random": _best(tmp_path / "m_r.json", 0.9, params)},
        "fashion": {"gp": _best(tmp_path / "f_gp.json", 0.7, params)},
        "cifar10": {"gp": _best(tmp_path / "c_gp.json", None, None)},  # no valid trial
    }
    assert best_configuration(best["mnist"]) == ("random", params, 0.9)
    assert best_configuration(best["cifar10"]) is None
    rng = np.random.default_rng(0)
    X = rng.random((60, 16)).astype(np.float32)
    y = np.repeat(np.arange(3), 20)
    settings = dict(target="fashion", model="mlp", best_by_dataset=best, X=X, y=y, input_shape=(1, 4, 4),
                    repeats=2, seed=1, n_folds=2, epochs=1, log=lambda m: None)
    out = tmp_path / "fashion" / "transfer_rows.csv"
    frame = run_transfer(out_csv=out, **settings)
    assert set(frame["source_dataset"]) == {"mnist"} and len(frame) == 2
    assert (frame["source_sampler"] == "random").all() and (frame["source_accuracy"] == 0.9).all()
    written = pd.read_csv(out)
    assert written["accuracy"].between(0, 1).all()
    table = transfer_table(written)
    assert table["source_dataset"].tolist() == ["mnist"] and table["n_repeats"].tolist() == [2]
    # only the target's own best: nothing to transfer, an empty table with its header
    alone = run_transfer(out_csv=tmp_path / "alone.csv", **{**settings, "best_by_dataset": {"fashion": best["fashion"]}})
    assert alone.empty and "source_dataset" in pd.read_csv(tmp_path / "alone.csv").columns
