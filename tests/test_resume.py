"""Killed, torn and resumed studies end exactly as uninterrupted ones.

* a journal torn at any byte of its last record (a power cut, a full disk)
  opens with every finished trial, and the study resumes;
* a ``random`` study killed (SIGKILL) mid-trial, more than once, and resumed
  evaluates the same configurations with the same seeds and ends with the
  same values as an uninterrupted run, and so does a run by two workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from bioplaus.data import load_prepared
from bioplaus.errors import StudyError
from bioplaus.study import StudySettings, open_storage, run_worker
from bioplaus.study.storage import repair_journal

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _finished(path) -> dict[int, tuple]:
    study = optuna.load_study(study_name="digits/fake/random", storage=open_storage(path))
    return {t.number: (t.state, t.value, t.params.get("shrink")) for t in study.get_trials(deepcopy=False)
            if t.state.is_finished()}


@pytest.fixture()
def finished_journal(tmp_path, prepared_digits):
    data = load_prepared(prepared_digits)
    settings = StudySettings(dataset="digits", model="fake", sampler="random", n_trials=3, n_folds=2,
                             epochs=1, seed=5)
    path = tmp_path / "full.journal"
    run_worker(settings, open_storage(path), data.X, data.y, data.input_shape)
    return path, settings, data


def test_a_journal_torn_at_any_byte_of_its_last_record_opens_with_every_finished_trial(
        tmp_path, finished_journal, capfd):
    path, settings, data = finished_journal
    full = path.read_bytes()
    start = full.rstrip(b"\n").rfind(b"\n") + 1  # the last record: full[start:]
    (tmp_path / "ref.journal").write_bytes(full[:start])
    without_last = _finished(tmp_path / "ref.journal")
    complete = _finished(path)
    assert len(full) - start > 50
    for cut in range(start + 1, len(full)):
        torn = tmp_path / f"torn{cut}" / "study.journal"
        torn.parent.mkdir()
        torn.write_bytes(full[:cut])
        capfd.readouterr()
        got = _finished(torn)
        err = capfd.readouterr().err
        if cut == len(full) - 1:  # only the newline lost: the record is whole and kept
            assert got == complete and "dropped" not in err
            continue
        assert got == without_last, cut  # every trial finished before the torn record is there
        assert f"study journal {torn}: dropped {cut - start} bytes" in err, err
        backups = list(torn.parent.glob("study.journal.dropped-*"))
        assert len(backups) == 1 and backups[0].read_bytes() == full[start:cut]
        assert torn.read_bytes() == full[:start]
        assert repair_journal(torn) == 0  # repaired for good
    # a torn journal resumes: the trial whose end was torn is re-run, the study ends exact
    for cut in (start + 1, (start + len(full)) // 2, len(full) - 2):
        torn = tmp_path / f"torn{cut}" / "study.journal"
        bigger = StudySettings(**{**settings.__dict__, "n_trials": 5})
        study = run_worker(bigger, open_storage(torn), data.X, data.y, data.input_shape)
        valid = [t for t in study.trials if t.state == TrialState.COMPLETE and not t.user_attrs["invalid"]]
        assert len(valid) == 5
        for number, (state, value, shrink) in without_last.items():
            assert study.trials[number].state == state and study.trials[number].value == value


def test_garbage_tails_are_dropped_and_damage_before_valid_records_is_refused(tmp_path, finished_journal):
    path, _, _ = finished_journal
    full = path.read_bytes()
    complete = _finished(path)
    garbage = tmp_path / "g" / "study.journal"
    garbage.parent.mkdir()
    garbage.write_bytes(full + b"\x00\xff garbage {not json\n\x13\x37")
    assert _finished(garbage) == complete and garbage.read_bytes() == full
    # a torn record that a later append continued (journals written before repair existed)
    start = full.rstrip(b"\n").rfind(b"\n") + 1
    continued = tmp_path / "c" / "study.journal"
    continued.parent.mkdir()
    continued.write_bytes(full[: start + 30] + full[start:])
    assert _finished(continued) == complete
    # damage in the middle, valid records after it: refused, naming the file and the way out
    middle = tmp_path / "m" / "study.journal"
    middle.parent.mkdir()
    lines = full.split(b"\n")
    lines[3] = b"#### damaged ####"
    middle.write_bytes(b"\n".join(lines))
    with pytest.raises(StudyError, match=rf"{middle} is damaged at line 4 .*bioplaus repair-journal {middle} --truncate"):
        open_storage(middle)
    proc = subprocess.run([sys.executable, "-m", "bioplaus", "study", "--data", "x", "--model", "mlp",
                           "--sampler", "random", "--out", str(middle.parent), "--n-trials", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "bioplaus", "repair-journal", str(middle), "--truncate"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert middle.read_bytes() == b"\n".join(lines[:3]) + b"\n"
    open_storage(middle)  # opens now


# --------------------------------------------------------------------------- exact resume
N_TRIALS = 6


def _cli(data, out, *extra):
    return [sys.executable, "-m", "bioplaus", "study", "--plugin", "slow_fake_plugin", "--data", str(data),
            "--model", "slowfake", "--sampler", "random", "--out", str(out), "--n-trials", str(N_TRIALS),
            "--epochs", "1", "--folds", "2", "--threads", "1", "--seed", "4", *extra]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def _table(out: Path) -> pd.DataFrame:
    """The evaluated configurations and their results, by draw (valid and invalid)."""
    df = pd.read_csv(out / "trials.csv")
    df = df[df["state"] == "COMPLETE"].sort_values("draw")
    return df[["draw", "seed", "invalid", "value", "accuracy", "accuracy_fold_1", "accuracy_fold_2",
               "param_mode", "param_shrink"]].reset_index(drop=True)


def _kill_mid_trial(proc, journal, min_complete):
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if not journal.exists():
            continue
        try:
            trials = optuna.load_study(study_name="digits/slowfake/random",
                                       storage=open_storage(journal)).get_trials(deepcopy=False)
        except KeyError:
            continue
        done = sum(t.state == TrialState.COMPLETE for t in trials)
        if done >= min_complete and any(t.state == TrialState.RUNNING and "seed" in t.user_attrs for t in trials):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return done
    pytest.fail("the study was not caught mid-trial: " + (proc.stderr.read() if proc.poll() is not None else ""))


def test_a_killed_and_resumed_random_study_ends_as_an_uninterrupted_one(tmp_path, prepared_digits):
    ref_out = tmp_path / "reference"
    ref = subprocess.run(_cli(prepared_digits, ref_out), capture_output=True, text=True, timeout=300, env=_env())
    assert ref.returncode == 0, ref.stderr
    reference = _table(ref_out)
    assert (~reference["invalid"]).sum() == N_TRIALS and reference["invalid"].any()  # invalid draws do not count

    out = tmp_path / "killed"
    journal = out / "study.journal"
    for min_complete in (1, 4):  # killed twice, at different points
        proc = subprocess.Popen(_cli(prepared_digits, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=_env())
        _kill_mid_trial(proc, journal, min_complete)
    rerun = subprocess.run(_cli(prepared_digits, out), capture_output=True, text=True, timeout=300, env=_env())
    assert rerun.returncode == 0, rerun.stderr
    assert "was left running by a dead worker: re-queued" in rerun.stderr or \
        "configuration re-queued" in rerun.stderr
    df = pd.read_csv(out / "trials.csv")
    assert (df["state"] == "FAIL").sum() >= 1  # the killed trials are shown, with their message
    pd.testing.assert_frame_equal(_table(out), reference)

    # two workers on one study: the same draws, seeds and values again
    two = tmp_path / "two"
    procs = [subprocess.Popen(_cli(prepared_digits, two, "--worker-only", "--heartbeat-seconds", "0.5",
                                   "--stale-after-seconds", "4"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    exp = subprocess.run([sys.executable, "-m", "bioplaus", "export", *_cli(prepared_digits, two)[4:]],
                         capture_output=True, text=True, timeout=120, env=_env())
    assert exp.returncode == 0, exp.stderr
    pd.testing.assert_frame_equal(_table(two), reference)
