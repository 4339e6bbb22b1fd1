"""Alignment per epoch: the library rows, their seeds, the CLI, the figure and the workflow's targets."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bioplaus.cli import main
from bioplaus.errors import ConfigError
from bioplaus.models import get_model
from bioplaus.study import run_repeats, sources_from_best
from bioplaus.study.alignment import ALIGNMENT_COLUMNS, epoch_angles, run_alignment, supports_alignment
from bioplaus.study.evaluation import fold_splits, run_fold

REPO = Path(__file__).resolve().parents[1]

#: a small feedback-alignment network that learns digits within a few epochs
FA_SMALL = {**get_model("fa").default_params, "num_layers": 2, "h_l_1": 40, "h_l_2": 30,
            "learning_rate": 0.05, "momentum": 0.9, "batch_size": 20}


def _best_json(path, params, sampler="random"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dataset": "digits", "model": "fa", "sampler": sampler, "number": 3,
                                "accuracy": 0.5, "params": params}))
    return path


def _alignment(X, y, sources, model="fa", epochs=4, **kw):
    return run_alignment(dataset="digits", model=model, sources=sources, X=X, y=y, input_shape=(1, 8, 8),
                         seed=1, n_folds=3, epochs=epochs, log=lambda m: None, **kw)


def test_rows_angles_sources_and_learning(tmp_path, digits):
    X, y = digits
    best = {"random": _best_json(tmp_path / "random" / "best.json", FA_SMALL),
            "gp": _best_json(tmp_path / "gp" / "best.json", {**FA_SMALL, "learning_rate": -1.0}, "gp"),
            "tpe": _best_json(tmp_path / "tpe" / "best.json", None, "tpe")}  # a study without a valid trial
    sources = sources_from_best(best, "fa")
    assert set(sources) == {"default", "best_random", "best_gp"}
    frame = _alignment(X, y, sources, epochs=6)
    assert list(frame.columns[:len(ALIGNMENT_COLUMNS)]) == ALIGNMENT_COLUMNS
    assert set(frame["source"]) == {"default", "best_random", "best_gp"}
    assert set(frame["dataset"]) == {"digits"} and set(frame["model"]) == {"fa"}

    trained = frame[~frame["invalid"]]
    assert trained["angle_deg"].between(0, 180).all()  # defined for every epoch and layer here
    assert trained["accuracy"].between(0, 1).all()
    n_train = len(fold_splits(y, 3, int(trained["split_seed"].iloc[0]))[0][0])
    for source, n_layers, batch in (("default", 1, 100), ("best_random", 2, 20)):
        rows = trained[trained["source"] == source]
        assert len(rows) == 6 * n_layers
        assert sorted(set(rows["layer"])) == list(range(1, n_layers + 1))
        assert list(rows["epoch"].drop_duplicates()) == [1, 2, 3, 4, 5, 6]
        assert (rows["batches"] == math.ceil(n_train / batch)).all()  # every batch of the epoch
        assert (rows["epochs_completed"] == rows["epoch"]).all()
        # feedback alignment: the updates come to align with backprop's (first fold, these seeds)
        mean = rows.groupby("epoch")["angle_deg"].mean()
        assert mean.iloc[-1] < 90 and mean.iloc[-1] < mean.iloc[0]
    small = trained[trained["source"] == "best_random"].groupby("epoch")
    assert small["angle_deg"].mean().iloc[-1] < 80 and small["accuracy"].first().iloc[-1] > 0.3

    invalid = frame[frame["source"] == "best_gp"]
    assert len(invalid) == 1 and invalid["invalid"].all()
    assert invalid["epoch"].isna().all() and invalid["angle_deg"].isna().all()
    assert "learning_rate" in invalid["message"].iloc[0]
    assert not frame.loc[frame["source"] != "best_gp", ["invalid", "diverged", "error"]].any().any()


def test_seeds_are_the_first_noise_floor_repeat(tmp_path, digits):
    """Recording changes nothing that is learnt: the last epoch's accuracy is repeat 0's first fold."""
    X, y = digits
    X, y = X[:900], y[:900]
    sources = {"best_random": FA_SMALL}
    repeats = run_repeats(dataset="digits", model="fa", sources=sources, X=X, y=y, input_shape=(1, 8, 8),
                          repeats=1, seed=5, n_folds=3, epochs=2, out_csv=tmp_path / "repeats.csv",
                          log=lambda m: None)
    frame = run_alignment(dataset="digits", model="fa", sources=sources, X=X, y=y, input_shape=(1, 8, 8),
                          seed=5, n_folds=3, epochs=2, log=lambda m: None)
    assert frame["accuracy"].iloc[-1] == repeats["accuracy_fold_1"].iloc[0]
    other = run_alignment(dataset="digits", model="fa", sources=sources, X=X, y=y, input_shape=(1, 8, 8),
                          seed=5, n_folds=3, epochs=2, repeat=1, log=lambda m: None)
    assert other["seed"].iloc[0] != frame["seed"].iloc[0]
    again = run_alignment(dataset="digits", model="fa", sources=sources, X=X, y=y, input_shape=(1, 8, 8),
                          seed=5, n_folds=3, epochs=2, log=lambda m: None)
    pd.testing.assert_frame_equal(again, frame)  # reproducible


def test_divergence_is_flagged_not_raised(digits):
    X, y = digits
    params = {**get_model("sign").default_params, "learning_rate": 1e30}
    frame = _alignment(X, y, {"best_gp": params}, model="sign", epochs=3)
    assert frame["diverged"].all() and "diverged" in frame["message"].iloc[0]
    assert (frame["epochs_completed"] < 1).all() and (frame["epoch"] == 1).all()  # stopped inside epoch 1
    assert sorted(frame["layer"]) == [1, 2]


def test_segdend_rows_and_recording_changes_nothing_learnt(tmp_path, digits):
    """The segregated-dendrite rule's angle to its backprop control, per epoch and hidden layer."""
    X, y = digits
    X, y = X[:150], y[:150]
    params = {**get_model("segdend").default_params, "num_layers": 2, "h_l_1": 20, "h_l_2": 12}
    options = {"batch_size": 10}
    kw = dict(dataset="digits", model="segdend", sources={"default": params}, X=X, y=y, input_shape=(1, 8, 8),
              seed=5, n_folds=3, epochs=2, options=options, log=lambda m: None)
    frame = run_alignment(**kw)
    repeats = run_repeats(**kw, repeats=1, out_csv=tmp_path / "repeats.csv")
    assert frame["accuracy"].iloc[-1] == repeats["accuracy_fold_1"].iloc[0]
    assert list(frame["epoch"]) == [1, 1, 2, 2] and list(frame["layer"]) == [1, 2, 1, 2]
    assert frame["angle_deg"].between(0, 180).all()  # defined: every batch has input and an error
    n_train = len(fold_splits(y, 3, int(frame["split_seed"].iloc[0]))[0][0])
    assert (frame["batches"] == math.ceil(n_train / 10)).all()
    assert not frame[["invalid", "diverged", "error", "timed_out"]].any().any()


def test_models_without_the_record_are_refused(digits):
    X, y = digits
    assert supports_alignment("fa") and supports_alignment("burstprop") and supports_alignment("segdend")
    assert not supports_alignment("mlp") and not supports_alignment("cnn")
    with pytest.raises(ConfigError, match="record_alignment"):
        _alignment(X, y, {"default": get_model("mlp").default_params}, model="mlp")


def test_epoch_angles_weight_calls_by_batches():
    angles = [np.array([90.0, np.nan]), np.array([60.0, 30.0]), np.array([np.nan, np.nan])]
    out = epoch_angles(angles, [1, 3, 5], 2)
    np.testing.assert_allclose(out, [(90 + 3 * 60) / 4, 30.0])
    assert np.isnan(epoch_angles([], [], 3)).all()


def test_run_fold_calls_back_after_each_epoch(digits):
    X, y = digits
    tr, te = fold_splits(y, 3, 0)[0]
    seen = []
    res = run_fold("fa", FA_SMALL, X, y, tr, te, fold=0, input_shape=(1, 8, 8), classes=np.arange(10),
                   epochs=3, seed=0, on_epoch=lambda est, done: seen.append((done, est.n_examples_seen_)))
    assert seen == [(1.0, len(tr)), (2.0, 2 * len(tr)), (3.0, 3 * len(tr))]
    stopped = []
    res = run_fold("fake", {"mode": "slow", "shrink": 1.0}, X, y, tr, te, fold=0, input_shape=(1, 8, 8),
                   classes=np.arange(10), epochs=5, seed=0, time_limit=0.2, options={"sleep": 0.05},
                   on_epoch=lambda est, done: stopped.append(done))
    assert res.timed_out and len(stopped) == 1 and 0 < stopped[0] < 1 and stopped[0] == res.epochs_completed


def test_resume_keeps_finished_sources(tmp_path, digits):
    X, y = digits
    out = tmp_path / "alignment.csv"
    first = _alignment(X, y, {"default": FA_SMALL}, epochs=2)
    first.to_csv(out.with_name(out.name + ".partial.csv"), index=False)  # as a killed run leaves it
    lines = []
    sources = {"default": FA_SMALL, "best_random": {**FA_SMALL, "learning_rate": 0.1}}
    frame = run_alignment(dataset="digits", model="fa", sources=sources, X=X, y=y, input_shape=(1, 8, 8),
                          seed=1, n_folds=3, epochs=2, out_csv=out, log=lines.append)
    assert len(lines) == 1 and "best_random" in lines[0]  # only the unfinished source was trained
    np.testing.assert_allclose(frame.loc[frame["source"] == "default", "angle_deg"], first["angle_deg"])
    assert not out.with_name(out.name + ".partial.csv").exists()
    written = pd.read_csv(out)
    assert len(written) == len(frame) and set(written["source"]) == {"default", "best_random"}


def test_cli_writes_the_csv(tmp_path, prepared_digits):
    best = _best_json(tmp_path / "random" / "best.json", FA_SMALL)
    out = tmp_path / "res" / "alignment.csv"
    code = main(["alignment", "--data", str(prepared_digits), "--dataset", "digits", "--model", "fa",
                 "--best", f"random={best}", "--folds", "3", "--epochs", "2", "--seed", "2",
                 "--options", json.dumps({"dtype": "float32"}), "--threads", "1", "--out", str(out)])
    assert code == 0
    frame = pd.read_csv(out)
    assert set(frame["source"]) == {"default", "best_random"}
    assert list(frame.loc[frame["source"] == "best_random", "layer"]) == [1, 2, 1, 2]
    assert frame["angle_deg"].between(0, 180).all()
    bad = main(["alignment", "--data", str(prepared_digits), "--model", "fa", "--best", "random",
                "--out", str(tmp_path / "x.csv")])
    assert bad == 2
    assert main(["alignment", "--data", str(prepared_digits), "--model", "mlp",
                 "--out", str(tmp_path / "y.csv")]) == 2


def _frame_for_figure(X, y):
    fa = _alignment(X, y, {"default": get_model("fa").default_params, "best_random": FA_SMALL}, epochs=3)
    sign = _alignment(X, y, {"default": get_model("sign").default_params,
                             "best_gp": {**get_model("sign").default_params, "learning_rate": 1e30}},
                      model="sign", epochs=3)
    return pd.concat([fa, sign, fa.assign(dataset="mnist-5k")], ignore_index=True)


def test_figure_renders(tmp_path, digits):
    from bioplaus.analysis.figures import plot_alignment

    X, y = digits
    frame = _frame_for_figure(X, y)
    frame.to_csv(tmp_path / "a.csv", index=False)
    saved = plot_alignment(pd.read_csv(tmp_path / "a.csv"), tmp_path / "fig" / "alignment")
    png, pdf = saved
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 20_000
    assert pdf.read_bytes().startswith(b"%PDF")
    axes = saved.figure.axes
    assert len(axes) == 4  # angle and accuracy rows, one column per dataset
    assert {ax.get_title() for ax in axes} == {"MNIST (5k subset)", "Digits (8x8)", ""}
    angle_ax = axes[0]
    assert any(np.allclose(line.get_ydata(), 90) for line in angle_ax.get_lines())  # the reference line
    legend = [t.get_text() for t in saved.figure.legends[0].get_texts()]
    assert "published default setting" in legend and "diverged or out of time" in legend
    with pytest.raises(ValueError, match="no row"):
        plot_alignment(frame[frame["invalid"] & False], tmp_path / "empty")


def test_figure_cli(tmp_path, digits):
    X, y = digits
    _frame_for_figure(X, y).to_csv(tmp_path / "a.csv", index=False)
    assert main(["alignment-figure", "--alignment", str(tmp_path / "a.csv"), "--out", str(tmp_path / "f")]) == 0
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")
    invalid = _alignment(X, y, {"best_gp": {**FA_SMALL, "learning_rate": -1.0}})
    invalid.to_csv(tmp_path / "i.csv", index=False)
    assert main(["alignment-figure", "--alignment", str(tmp_path / "i.csv"), "--out", str(tmp_path / "g")]) == 0
    assert (tmp_path / "g.png").stat().st_size > 1000  # a notice saying why, so the target exists


def test_workflow_targets_only_models_that_record(tmp_path):
    (tmp_path / "tiny.yaml").write_text(
        "datasets:\n  digits: {max_samples: 300}\nmodels: [fa, mlp]\nsamplers: [random]\n"
        "n_trials: 3\nepochs: 2\nrepeats: 1\nthreads: 1\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "tiny.yaml"), "--cores", "2", "-n", "-p"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "results/digits/fa/alignment.csv" in out and "results/figures/alignment.png" in out
    assert "results/digits/mlp/alignment.csv" not in out
    assert "bioplaus alignment --data results/data/digits --dataset digits --model fa" in out
    assert "--best random=results/digits/fa/random/best.json" in out
    proc = subprocess.run(cmd + ["results/digits/mlp/alignment.csv"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0  # no rule makes it
