"""Loader of the 2019 reference logs: schema, casts, clear errors, the real logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bioplaus.analysis.reference import ReferenceLogError, load_reference_logs, read_reference_log

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference"


def _line(target, params, delta):
    return json.dumps({"target": target, "params": params,
                       "datetime": {"datetime": "2019-01-30 00:19:43", "elapsed": delta,
                                    "delta": delta}})


@pytest.fixture
def log_folder(tmp_path):
    segdend = [
        _line(0.11, {"num_layers": 2.0, "h_l_1": 192.0, "l_f_phase": 44.0, "dt": 0.37,
                     "use_broadcast": 1.0, "noisy_symmetric_weights": 0.0}, 0.0),
        _line(0.90, {"num_layers": 1.0, "h_l_1": 500.0, "l_f_phase": 2.0, "dt": 1.0,
                     "use_broadcast": 0.0, "noisy_symmetric_weights": 1.0}, 3600.5),
    ]
    mlp = [_line(0.95, {"batch_size": 238.0, "learning_rate": 0.017, "num_layers": 3.0}, 0.0),
           "",  # blank lines are skipped
           _line(0.97, {"batch_size": 190.0, "learning_rate": 0.010, "num_layers": 4.0}, 39.0)]
    (tmp_path / "bo_logs_comp_dnn_mnist.json").write_text("\n".join(segdend) + "\n")
    (tmp_path / "bo_logs_dnn_fashion.json").write_text("\n".join(mlp) + "\n")
    (tmp_path / "unrelated.json").write_text("not a log")
    return tmp_path


def test_rows_have_trials_columns_and_renamed_models(log_folder):
    trials = load_reference_logs(log_folder)
    assert len(trials) == 4
    assert set(zip(trials["model"], trials["dataset"])) == {("segdend", "mnist"), ("mlp", "fashion")}
    assert (trials["sampler"] == "gp").all() and (trials["source"] == "2019").all()
    assert (trials["state"] == "COMPLETE").all()
    assert np.allclose(trials["chance"], 0.1)
    assert not trials[["diverged", "timed_out", "invalid"]].any().any()
    seg = trials[trials["model"] == "segdend"].reset_index(drop=True)
    assert seg["number"].tolist() == [0, 1]
    assert seg["accuracy"].tolist() == [0.11, 0.90] and seg["value"].tolist() == [0.11, 0.90]
    # the first line's delta (0) is unknown, later ones are the evaluation's seconds
    assert np.isnan(seg["duration_seconds"][0]) and seg["duration_seconds"][1] == 3600.5
    mlp = trials[trials["model"] == "mlp"].reset_index(drop=True)
    assert mlp["number"].tolist() == [0, 1]  # blank line does not count


def test_params_are_cast_to_declared_types(log_folder):
    seg = read_reference_log(log_folder / "bo_logs_comp_dnn_mnist.json")
    assert seg["param_num_layers"].dtype == np.int64
    assert seg["param_h_l_1"].tolist() == [192, 500]
    assert seg["param_l_f_phase"].dtype == np.int64
    assert seg["param_use_broadcast"].dtype == bool
    assert seg["param_use_broadcast"].tolist() == [True, False]
    assert seg["param_noisy_symmetric_weights"].tolist() == [False, True]
    assert seg["param_dt"].dtype == np.float64
    # combined: params missing for one model stay NA, ints/bools stay ints/bools
    both = load_reference_logs(log_folder)
    assert str(both["param_use_broadcast"].dtype) == "boolean"
    assert str(both["param_batch_size"].dtype) == "Int64"
    assert both.loc[both["model"] == "segdend", "param_batch_size"].isna().all()


def test_malformed_line_names_file_and_line(tmp_path):
    good = _line(0.5, {"num_layers": 1.0}, 0.0)
    (tmp_path / "bo_logs_cnn_cifar10.json").write_text(good + "\n{not json\n")
    with pytest.raises(ReferenceLogError, match=r"bo_logs_cnn_cifar10\.json, line 2"):
        load_reference_logs(tmp_path)
    (tmp_path / "bo_logs_cnn_cifar10.json").write_text(good + "\n" + json.dumps({"params": {}}))
    with pytest.raises(ReferenceLogError, match=r"line 2: missing 'target'"):
        load_reference_logs(tmp_path)


def test_folder_without_logs_is_a_clear_error(tmp_path):
    with pytest.raises(ReferenceLogError, match="no bo_logs_"):
        load_reference_logs(tmp_path)
    with pytest.raises(ReferenceLogError, match="does not exist"):
        load_reference_logs(tmp_path / "missing")
    assert issubclass(ReferenceLogError, ValueError)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/reference not available")
def test_real_reference_logs():
    trials = load_reference_logs(REFERENCE)
    counts = trials.groupby(["model", "dataset"]).size().to_dict()
    # evaluations per log, as in the study's table (design/study.md)
    assert counts == {
        ("cnn", "cifar10"): 50, ("cnn", "fashion"): 50, ("cnn", "mnist"): 50,
        ("segdend", "cifar10"): 23, ("segdend", "fashion"): 30, ("segdend", "mnist"): 41,
        ("mlp", "cifar10"): 50, ("mlp", "fashion"): 50, ("mlp", "mnist"): 50,
    }
    seg = trials[trials["model"] == "segdend"]
    assert seg["param_use_conductances"].notna().all()
    assert set(seg["param_use_conductances"].astype(bool)) <= {True, False}
    assert seg["param_h_l_1"].between(30, 500).all()
    cnn = trials[trials["model"] == "cnn"]
    assert cnn["param_stride"].between(1, 3).all() and cnn["param_k_1"].between(2, 10).all()
    assert trials["accuracy"].between(0, 1).all()
    assert isinstance(trials, pd.DataFrame)
