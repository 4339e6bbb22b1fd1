"""Studies: outputs in the documented layout, resume without repeats, recovery of killed runs."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from bioplaus.data import load_prepared
from bioplaus.errors import ConfigError
from bioplaus.study import StudySettings, open_storage, open_study, run_worker, write_outputs


def _settings(**kw):
    base = dict(dataset="digits", model="fake", sampler="random", n_trials=4, n_folds=3, epochs=1, seed=7)
    base.update(kw)
    return StudySettings(**base)


def test_study_writes_documented_tables(tmp_path, prepared_digits):
    data = load_prepared(prepared_digits)
    settings = _settings(n_trials=6)
    storage = open_storage(tmp_path / "s" / "study.journal")
    study = run_worker(settings, storage, data.X, data.y, data.input_shape)
    trials_csv, best_json = write_outputs(study, settings, tmp_path / "s")
    df = pd.read_csv(trials_csv)
    assert list(df["number"]) == list(range(len(df)))  # one worker, no death: every ask evaluated
    assert (df["state"] == "COMPLETE").all()
    assert (~df["invalid"]).sum() == 6  # n_trials counts valid trials; invalid ones are shown besides
    assert list(df["draw"]) == list(df["number"])
    for col in ("accuracy", "accuracy_fold_1", "accuracy_fold_3", "fit_seconds", "fit_seconds_fold_2",
                "diverged", "censored", "epochs_completed", "invalid", "message", "seed", "chance",
                "param_mode", "param_shrink", *(f"accuracy_epoch_{e + 1}" for e in range(settings.epochs))):
        assert col in df.columns, col
    valid = df[~df["invalid"]]
    invalid = df[df["invalid"]]
    assert len(valid) and len(invalid)  # the fake space is half invalid
    assert invalid["accuracy"].isna().all() and (invalid["value"] == 0.1).all()
    folds = valid[["accuracy_fold_1", "accuracy_fold_2", "accuracy_fold_3"]].mean(axis=1)
    assert (abs(folds - valid["accuracy"]) < 1e-12).all()
    assert (valid[f"accuracy_epoch_{settings.epochs}"] == valid["accuracy"]).all()  # the curve ends at it
    assert (valid["epochs_completed"] == settings.epochs).all() and not df["censored"].any()
    best = json.loads(best_json.read_text())
    assert best["accuracy"] == pytest.approx(valid["accuracy"].max())
    assert best["params"]["mode"] == "ok"


def test_resume_continues_without_repeating(tmp_path, prepared_digits):
    data = load_prepared(prepared_digits)
    path = tmp_path / "study.journal"
    first = run_worker(_settings(n_trials=3), open_storage(path), data.X, data.y, data.input_shape)
    before = {t.number: (t.params, t.datetime_start) for t in first.trials}
    again = run_worker(_settings(n_trials=5), open_storage(path), data.X, data.y, data.input_shape)
    valid = [t for t in again.trials if t.state == TrialState.COMPLETE and not t.user_attrs["invalid"]]
    assert len(valid) == 5
    for number, (params, start) in before.items():
        assert (again.trials[number].params, again.trials[number].datetime_start) == (params, start)  # not re-run
    # asking for fewer trials than the study holds runs nothing
    third = run_worker(_settings(n_trials=2), open_storage(path), data.X, data.y, data.input_shape)
    assert len(third.trials) == len(again.trials)


def test_changed_settings_refuse_to_resume(tmp_path, prepared_digits):
    data = load_prepared(prepared_digits)
    path = tmp_path / "study.journal"
    run_worker(_settings(n_trials=1), open_storage(path), data.X, data.y, data.input_shape)
    with pytest.raises(ConfigError, match="epochs: stored 1, now 3"):
        open_study(_settings(n_trials=2, epochs=3), open_storage(path))


def _cli_study(data_dir, out, n_trials, epochs=25):
    return [sys.executable, "-m", "bioplaus", "study", "--data", str(data_dir), "--model", "mlp",
            "--sampler", "random", "--out", str(out), "--n-trials", str(n_trials), "--epochs", str(epochs),
            "--folds", "2", "--threads", "1", "--seed", "3"]


def test_killed_run_resumes_and_ends_with_exact_trial_count(tmp_path, prepared_digits):
    out = tmp_path / "res"
    n_trials = 5
    proc = subprocess.Popen(_cli_study(prepared_digits, out, n_trials), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    journal = out / "study.journal"
    deadline = time.time() + 120
    complete = []
    while time.time() < deadline:
        time.sleep(0.3)
        if journal.exists():
            try:
                study = optuna.load_study(study_name="digits/mlp/random", storage=open_storage(journal))
            except KeyError:  # the journal is there, the study not yet
                continue
            complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
            running = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
            if len(complete) >= 2 and running and "worker" in running[0].user_attrs:
                break
    assert len(complete) >= 2, proc.stderr.read() if proc.poll() is not None else "no progress"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    study = optuna.load_study(study_name="digits/mlp/random", storage=open_storage(journal))
    before = {t.number: t.datetime_complete for t in study.trials if t.state == TrialState.COMPLETE}
    killed = [t for t in study.trials if t.state == TrialState.RUNNING]
    assert len(killed) == 1

    rerun = subprocess.run(_cli_study(prepared_digits, out, n_trials), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"trial {killed[0].number} was left running by a dead worker: re-queued" in rerun.stderr
    df = pd.read_csv(out / "trials.csv")
    done = df[df["state"] == "COMPLETE"]
    assert len(done) == n_trials
    assert df["number"].is_unique
    # finished trials were kept as they were, not run again
    study = optuna.load_study(study_name="digits/mlp/random", storage=open_storage(journal))
    for t in study.trials:
        if t.number in before:
            assert t.datetime_complete == before[t.number]
    # the killed configuration was re-run with its original seed
    failed = df[df["state"] == "FAIL"]
    assert list(failed["number"]) == [killed[0].number]
    retry = done[done["origin"] == killed[0].number]
    assert len(retry) == 1 and retry["number"].iloc[0] > killed[0].number
    assert done["origin"].is_unique
