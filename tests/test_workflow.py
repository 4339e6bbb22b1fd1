"""End to end: the Snakemake DAG on a tiny config in a temporary folder."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # runs the DAG: minutes

TINY = """\
seed: 3
datasets:
  digits: {max_samples: 300}
models: [mlp, cnn, segdend]
samplers: [random]
n_trials: 10
n_initial_points: 3
epochs: 1
time_limit: 3
threads: 2
repeats: 2
model_options:
  segdend: {batch_size: 20}
"""


def _snakemake(workdir, *args, check=True, timeout=900):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "tiny.yaml"), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("study")
    (work / "tiny.yaml").write_text(TINY)
    _snakemake(work)
    return work


def test_every_study_writes_its_tables(study_dir):
    res = study_dir / "results"
    for model in ("mlp", "cnn", "segdend"):
        df = pd.read_csv(res / "digits" / model / "random" / "trials.csv")
        # n_trials counts valid, fully trained trials (a censored one is replaced by the next draw)
        assert ((df["state"] == "COMPLETE") & ~df["invalid"] & ~df["censored"]).sum() == 10
        assert set(df["sampler"]) == {"random"} and set(df["model"]) == {model}
        valid = df[~df["invalid"]]
        mean_of_folds = valid[[f"accuracy_fold_{k}" for k in (1, 2, 3)]].mean(axis=1)
        assert (abs(mean_of_folds - valid["accuracy"]) < 1e-12).all()
        assert (res / "digits" / model / "random" / "best.json").exists()
        assert (res / "digits" / model / "random" / "study.journal").exists()
    mlp = pd.read_csv(res / "digits" / "mlp" / "random" / "trials.csv")
    assert mlp["accuracy"].max() > 0.5  # real learning, even at this size


def test_summary_matches_the_trials(study_dir):
    res = study_dir / "results"
    summary = pd.read_csv(res / "summary.csv")
    assert len(summary) == 3
    for _, row in summary.iterrows():
        df = pd.read_csv(res / row["dataset"] / row["model"] / row["sampler"] / "trials.csv")
        complete = (df["state"] == "COMPLETE") & ~df["invalid"]
        acc = df.loc[complete & ~df["censored"], "accuracy"]
        assert row["n"] == len(acc)
        assert row["n_invalid"] == int(df["invalid"].sum())
        assert row["n_censored"] == int((complete & df["censored"]).sum())
        assert row["median"] == pytest.approx(acc.median())
        assert row["max"] == pytest.approx(acc.max())
        assert row["frac_learns"] == pytest.approx((acc >= 0.1 + 0.1 - 1e-9).mean())
        assert row["noise_sd"] >= 0


def test_figures_and_analysis_files_exist_with_content(study_dir):
    res = study_dir / "results"
    for stem in ("robustness", "robustness_random", "learns_curves", "learns_by_epoch",
                 "importance_digits_mlp", "sensitivity_digits_segdend"):
        png = (res / "figures" / f"{stem}.png").read_bytes()
        pdf = (res / "figures" / f"{stem}.pdf").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, stem
        assert pdf.startswith(b"%PDF"), stem
    learning = pd.read_csv(res / "learning.csv")
    summary = pd.read_csv(res / "summary.csv").set_index("model")
    assert set(learning["epoch"]) == {1} and set(learning["model"]) == {"mlp", "cnn", "segdend"}
    for _, row in learning.iterrows():  # one epoch: the curve's only point is the end point
        assert row["frac_learns"] == pytest.approx(summary.loc[row["model"], "frac_learns"])
        assert row["n"] == summary.loc[row["model"], "n"]
        imp = pd.read_csv(res / "digits" / "mlp" / "importance.csv")
    assert {"param", "evaluator", "importance"} <= set(imp.columns)
    comparison = pd.read_csv(res / "comparison.csv")
    # one row per backprop baseline the segregated-dendrite rule is compared with
    assert sorted(comparison["model"]) == ["cnn", "mlp"] and set(comparison["dataset"]) == {"digits"}
    repeats = pd.read_csv(res / "digits" / "mlp" / "repeats.csv")
    assert set(repeats["source"]) == {"default", "best_random"}
    assert len(repeats) == 4
    for log in ("study/digits_mlp_random.log", "summary.log"):
        assert (res / "logs" / log).exists()
    assert (res / "benchmarks" / "study" / "digits_mlp_random.tsv").exists()


def test_one_target_rebuilds_alone(study_dir):
    proc = _snakemake(study_dir, "-n", "results/digits/mlp/random/trials.csv", "--forcerun", "study")
    stats = (proc.stdout + proc.stderr).split("Job stats:")[1].split("\n\n")[0]
    rows = dict(line.split() for line in stats.strip().splitlines()[2:])
    assert rows == {"study": "1", "total": "1"}


def test_report_is_built(study_dir):
    _snakemake(study_dir, "--report", str(study_dir / "results" / "report.html"))
    html = (study_dir / "results" / "report.html").read_text(errors="replace")
    assert "Robustness" in html and "summary" in html.lower()


def test_malformed_config_names_the_problem(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY.replace("n_trials: 10", "n_trails: 10").replace("epochs: 1", "epochs: 0"))
    proc = _snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "unknown key 'n_trails' (did you mean 'n_trials'?)" in err
    assert "config.epochs: 0 is out of range" in err
