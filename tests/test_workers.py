"""Several worker processes on one study: exact trial counts, no duplicates, dead workers.

Real ``python -m bioplaus study --worker-only`` processes run the real MLP on
600 prepared digits (trials of ~0.1-2 s) against the embedded journal storage
and against PostgreSQL. The PostgreSQL cases need a server: as root,
``eval "$(bash .ci/postgres.sh | grep '^export ')"`` starts one on loopback and
sets ``BIOPLAUS_TEST_POSTGRES_URL``; without it they are skipped.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from bioplaus.errors import ConfigError
from bioplaus.study import check_liveness, open_storage, plan_slots, recover_stale_trials, requeue_orphans
from bioplaus.study.seeds import INIT, derive_seed
from bioplaus.study.slots import concurrent_duplicate, skip_reason

REPO = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("BIOPLAUS_TEST_POSTGRES_URL")
SEED = 3
#: liveness options of the worker processes (seconds): a dead worker is found within ~4 s
FAST_LIVENESS = ["--heartbeat-seconds", "0.5", "--stale-after-seconds", "4"]
STORAGES = [
    "journal",
    pytest.param("postgres", marks=pytest.mark.skipif(
        not PG_URL, reason="BIOPLAUS_TEST_POSTGRES_URL is not set (run .ci/postgres.sh as root and export it)")),
]


# --------------------------------------------------------------------------- slot rules (in process)
def _trial(number, state, *, origin=None, params=None, value=None, **attrs):
    """A FrozenTrial as the storage returns it (``attrs``: further user attributes)."""
    ua = dict(attrs)
    if origin is not None:
        ua["origin"] = origin
    params = params if params is not None else {"x": float(number)}
    now = dt.datetime.now()
    return FrozenTrial(
        number=number, state=state, value=value, datetime_start=now,
        datetime_complete=now if state.is_finished() else None,
        params=params, distributions={k: FloatDistribution(-100, 100) for k in params},
        user_attrs=ua, system_attrs={}, intermediate_values={}, trial_id=number,
    )


C, R, F = TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL


def test_racing_asks_beyond_n_trials_are_surplus():
    trials = [_trial(0, C, value=0.5), _trial(1, R), _trial(2, R), _trial(3, R)]
    plan = plan_slots(trials, 3)
    assert plan.slots == [0, 1, 2] and plan.complete == 1 and not plan.orphans
    assert "surplus" in skip_reason(3, 3, trials, 3)
    assert skip_reason(2, 2, trials, 3) is None


def test_dead_workers_slot_is_requeued_once_and_a_late_surplus_is_not():
    # trial 1 died mid-trial; trial 3 was a surplus ask whose worker died before skipping it
    trials = [_trial(0, C, value=0.5), _trial(1, F, params={"x": 7.0}), _trial(2, C, value=0.6), _trial(3, F)]
    plan = plan_slots(trials, 3)
    assert plan.slots == [0, 1, 2]
    assert plan.orphans == {1: {"x": 7.0}}  # 3 is no slot: re-queueing it would overshoot n_trials
    # two workers re-queued the orphan concurrently: the lower copy runs, the higher is skipped
    trials += [_trial(4, R, origin=1, params={"x": 7.0}), _trial(5, R, origin=1, params={"x": 7.0})]
    assert not plan_slots(trials, 3).orphans
    assert skip_reason(4, 1, trials, 3) is None
    assert "trial 4 runs" in skip_reason(5, 1, trials, 3)
    trials[4] = _trial(4, C, origin=1, params={"x": 7.0}, value=0.7)
    assert "already complete" in skip_reason(5, 1, trials, 3)
    assert plan_slots(trials, 3).done == {0, 1, 2}


def test_errors_and_invalid_points_retire_their_slot_a_surplus_skip_does_not():
    trials = [_trial(0, F, error=True), _trial(1, F, skipped="surplus", params={}), _trial(2, C, value=0.1),
              _trial(3, R), _trial(4, C, value=0.1, invalid=True), _trial(5, F, skipped="dup", duplicate=True)]
    plan = plan_slots(trials, 2)
    # a surplus skip is not lost: once a lower draw is retired it is a slot again, re-queued
    # unsampled (its copy draws the same configuration with the draw's seed)
    assert plan.slots == [1, 2] and plan.orphans == {1: {}}
    assert plan.outcomes == {0: "error", 1: "unevaluated", 2: "valid", 3: "pending", 4: "invalid",
                             5: "duplicate"}
    assert plan.complete == 1  # the invalid trial is COMPLETE but does not count
    assert plan_slots(trials, 4).slots == [1, 2, 3]  # invalid, error and duplicate draws fill no slot


def test_a_censored_trial_retires_its_slot_so_the_study_ends_with_n_fully_trained_trials():
    # trial 1 was cut by the time limit: kept (its partial accuracy told to the optimiser) but
    # it fills no slot, so the next draw (3) takes it; timed_out is the older storages' name
    trials = [_trial(0, C, value=0.5), _trial(1, C, value=0.3, censored=True), _trial(2, C, value=0.6),
              _trial(3, R), _trial(4, C, value=0.2, timed_out=True)]
    plan = plan_slots(trials, 3)
    assert plan.outcomes[1] == "censored" and plan.outcomes[4] == "censored"
    assert plan.slots == [0, 2, 3] and plan.complete == 2 and plan.done == {0, 2}
    assert skip_reason(3, 3, trials, 3) is None
    # a space where every draw is cut short stops with a message that names the time limit
    from bioplaus.study.slots import stop_reason

    cut = [_trial(k, C, value=0.1, censored=True) for k in range(4)]
    why = stop_reason(plan_slots(cut, 3), max_consecutive_invalid=4)
    assert "censored" in why and "time_limit" in why


def test_draw_index_counts_fresh_trials_only():
    from bioplaus.study.slots import draw_index

    trials = [_trial(0, C, value=0.5), _trial(1, F), _trial(2, C, value=0.5), _trial(3, C, origin=1, value=0.5),
              _trial(4, R)]
    assert [draw_index(trials, o) for o in (0, 1, 2, 4)] == [0, 1, 2, 3]  # the copy (3) is no draw


def test_a_configuration_that_keeps_killing_its_worker_is_retired():
    died = [_trial(0, F, params={"x": 1.0}), _trial(1, F, origin=0, params={"x": 1.0})]
    assert plan_slots(died, 2, max_retries=3).orphans == {0: {"x": 1.0}}  # re-queued again
    died.append(_trial(2, F, origin=0, params={"x": 1.0}))
    plan = plan_slots(died, 2, max_retries=3)
    assert plan.outcomes[0] == "gave_up" and not plan.orphans and plan.slots == []


def test_a_study_stops_when_its_space_yields_no_valid_point_or_its_model_keeps_failing():
    from bioplaus.study.slots import stop_reason

    invalid = [_trial(k, C, value=0.1, invalid=True) for k in range(5)]
    assert stop_reason(plan_slots(invalid, 3), max_consecutive_invalid=6) is None
    why = stop_reason(plan_slots(invalid, 3), max_consecutive_invalid=5)
    assert "5 configurations in a row were invalid" in why and "max_consecutive_invalid" in why
    # a valid trial ends the run: only the failures since the last valid one count
    mixed = invalid[:3] + [_trial(3, C, value=0.5)] + invalid[4:] + [_trial(5, R)]
    assert stop_reason(plan_slots(mixed, 9), max_consecutive_invalid=2) is None
    assert stop_reason(plan_slots(mixed + [_trial(6, C, value=0.1, invalid=True)], 9),
                       max_consecutive_invalid=2) is not None
    errors = [_trial(k, F, error=True) for k in range(3)]
    why = stop_reason(plan_slots(errors, 3), max_retries=3)
    assert "3 configurations in a row failed with an error" in why and "max_retries" in why


def test_concurrent_duplicate_ignores_points_the_sampler_knew():
    trials = [_trial(0, C, value=0.5, params={"x": 1.0}), _trial(1, R, params={"x": 2.0}),
              _trial(2, C, value=0.4, params={"x": 3.0}), _trial(3, R, params={"x": 1.0})]
    # trial 0 was complete before trial 3 asked: the sampler chose to revisit it
    assert concurrent_duplicate(3, {"x": 1.0}, trials, known_complete={0}) is None
    assert concurrent_duplicate(4, {"x": 2.0}, trials, known_complete={0}) == 1  # running elsewhere
    assert concurrent_duplicate(4, {"x": 3.0}, trials, known_complete={0}) == 2  # finished since the ask
    assert concurrent_duplicate(4, {"x": 3.0}, trials, known_complete={0, 2}) is None


def test_liveness_settings_are_checked():
    assert check_liveness(2, 30) == (2.0, 30.0)
    with pytest.raises(ConfigError, match="must be at least twice heartbeat_seconds"):
        check_liveness(0.5, 0.2)
    with pytest.raises(ConfigError, match="heartbeat_seconds=0 must be a positive number"):
        check_liveness(0, 30)
    with pytest.raises(ConfigError, match="stale_after='soon' is not a number"):
        check_liveness(1, "soon")


def test_cli_liveness_options_else_environment_else_library_defaults(monkeypatch):
    """The library reads no environment: the CLI passes the options, else the variables, else nothing."""
    from bioplaus.cli import build_parser
    from bioplaus.cli.study import _liveness

    base = ["study", "--data", "d", "--model", "mlp", "--sampler", "random", "--out", "o", "--n-trials", "1"]
    monkeypatch.delenv("BIOPLAUS_HEARTBEAT_SECONDS", raising=False)
    monkeypatch.delenv("BIOPLAUS_STALE_AFTER_SECONDS", raising=False)
    assert _liveness(build_parser().parse_args(base)) == {}  # run_worker's defaults apply
    assert _liveness(build_parser().parse_args(base + FAST_LIVENESS)) == {"heartbeat_seconds": 0.5,
                                                                          "stale_after": 4.0}
    monkeypatch.setenv("BIOPLAUS_HEARTBEAT_SECONDS", "0.5")
    monkeypatch.setenv("BIOPLAUS_STALE_AFTER_SECONDS", "4")
    assert _liveness(build_parser().parse_args(base)) == {"heartbeat_seconds": 0.5, "stale_after": 4.0}
    args = build_parser().parse_args(base + ["--stale-after-seconds", "30"])  # an option beats the variable
    assert _liveness(args) == {"heartbeat_seconds": 0.5, "stale_after": 30.0}
    monkeypatch.setenv("BIOPLAUS_STALE_AFTER_SECONDS", "soon")
    with pytest.raises(ConfigError, match="BIOPLAUS_STALE_AFTER_SECONDS='soon' is not a number"):
        _liveness(build_parser().parse_args(base))


def test_trial_of_a_gone_process_is_failed_and_requeued_once(tmp_path):
    study = optuna.create_study(storage=open_storage(tmp_path / "s.journal"), direction="maximize")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    t = study.ask({"x": FloatDistribution(0, 1)})
    study._storage.set_trial_user_attr(t._trial_id, "worker", f"{socket.gethostname()}:{gone.pid}")
    study._storage.set_trial_user_attr(t._trial_id, "heartbeat", time.time())  # fresh: the pid decides
    other = study.ask({"x": FloatDistribution(0, 1)})  # a live worker elsewhere, recent heartbeat
    study._storage.set_trial_user_attr(other._trial_id, "worker", "other-node:1")
    study._storage.set_trial_user_attr(other._trial_id, "heartbeat", time.time())
    assert recover_stale_trials(study, stale_after=60) == [t.number]
    assert recover_stale_trials(study, stale_after=60) == []  # a second recovery finds nothing
    assert requeue_orphans(study, n_trials=2) == [t.number]
    assert requeue_orphans(study, n_trials=2) == []
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["origin"] == t.number
    assert waiting[0].system_attrs["fixed_params"] == {"x": t.params["x"]}
    # the other worker's heartbeat goes stale: it is failed too
    assert recover_stale_trials(study, stale_after=1e-3) == [other.number]


# --------------------------------------------------------------------------- worker processes
class StudyUnderTest:
    """One study (unique name) on one storage, and the commands that run it."""

    def __init__(self, kind: str, data: Path, out: Path, sampler: str, n_trials: int, tag: str = ""):
        self.kind, self.data, self.out, self.sampler, self.n_trials = kind, data, out, sampler, n_trials
        self.dataset = f"digits-{tag or uuid.uuid4().hex[:10]}"
        self.url = PG_URL if kind == "postgres" else str(out / "study.journal")
        self.name = f"{self.dataset}/mlp/{sampler}"

    def args(self, command="study"):
        args = [sys.executable, "-m", "bioplaus", command, "--data", str(self.data), "--dataset", self.dataset,
                "--model", "mlp", "--sampler", self.sampler, "--out", str(self.out),
                "--n-trials", str(self.n_trials), "--epochs", "3", "--folds", "2", "--threads", "1",
                "--seed", str(SEED), "--n-initial-points", "3"]
        if self.kind == "postgres":
            args += ["--storage", self.url]
        return args + (["--worker-only", *FAST_LIVENESS] if command == "study" else [])

    def start_workers(self, n: int, log_dir: Path) -> list[subprocess.Popen]:
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1"}
        procs = []
        for k in range(n):
            log = open(log_dir / f"{self.dataset}-worker{k}.log", "w")
            procs.append(subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT, env=env))
            procs[-1].log_path = log_dir / f"{self.dataset}-worker{k}.log"
        return procs

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=open_storage(self.url))

    def trials(self) -> list[FrozenTrial]:
        try:
            return self.study().get_trials(deepcopy=False)
        except KeyError:  # not created yet
            return []

    def run_in_process(self, command="study") -> None:
        """``bioplaus <command>`` in this process (no worker-only: writes trials.csv)."""
        from bioplaus.cli import main

        args = [a for a in self.args(command)[4:] if a != "--worker-only"]
        assert main([command, *args]) == 0

    def export(self) -> pd.DataFrame:
        self.run_in_process("export")
        return pd.read_csv(self.out / "trials.csv")

    def delete(self) -> None:
        if self.kind == "postgres":
            try:
                optuna.delete_study(study_name=self.name, storage=self.url)
            except KeyError:
                pass


@pytest.fixture()
def make_study(tmp_path, prepared_digits):
    made = []

    def make(kind, sampler, n_trials):
        s = StudyUnderTest(kind, prepared_digits, tmp_path / f"{kind}-{sampler}-{len(made)}", sampler, n_trials)
        made.append(s)
        return s

    yield make
    for s in made:
        s.delete()


def _wait(procs, timeout=150):
    deadline = time.time() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            logs = "\n".join(q.log_path.read_text()[-2000:] for q in procs)
            pytest.fail(f"workers did not finish in {timeout} s:\n{logs}")
    logs = [p.log_path.read_text() for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    return logs


def _table(trials) -> str:
    return "\n".join(f"{t.number:3d} {t.state.name:9s} origin={t.user_attrs.get('origin')} "
                     f"worker={t.user_attrs.get('worker')} skipped={t.user_attrs.get('skipped')} "
                     f"message={t.user_attrs.get('message')}" for t in trials)


def _assert_exact(s: StudyUnderTest, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Exactly n_trials COMPLETE, trial numbers unique, one COMPLETE trial per slot, slots 0..n-1."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == s.n_trials, _table(trials)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    origins = [t.user_attrs["origin"] for t in complete]
    assert len(set(origins)) == len(origins), _table(trials)  # no configuration evaluated twice
    by_number = {t.number: t for t in trials}
    for o in origins:  # each slot is a fresh ask; a re-queued copy has its params and seed
        assert by_number[o].user_attrs.get("origin", o) == o and by_number[o].params, _table(trials)
    died = [t for t in trials if t.state == TrialState.FAIL and "skipped" not in t.user_attrs]
    assert all(t.number in origins for t in died), _table(trials)  # no dead worker's trial lost
    draws = [t.user_attrs["draw"] for t in complete]
    assert len(set(draws)) == len(draws), _table(trials)  # each draw evaluated once
    for t in complete:  # seeds derive from the draw index (a re-queued copy keeps its draw)
        assert t.user_attrs["seed"] == derive_seed(SEED, INIT, t.user_attrs["draw"])
        assert t.user_attrs["accuracy"] is not None
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    if s.kind == "postgres":  # count in the database itself, not through optuna
        import sqlalchemy

        engine = sqlalchemy.create_engine(s.url)
        with engine.connect() as con:
            q = ("SELECT t.number, t.state FROM trials t JOIN studies s ON s.study_id = t.study_id "
                 "WHERE s.study_name = :name")
            rows = con.execute(sqlalchemy.text(q), {"name": s.name}).all()
        engine.dispose()
        assert sum(state == "COMPLETE" for _, state in rows) == s.n_trials
        assert len({n for n, _ in rows}) == len(rows) == len(trials)
    return complete


def _values_by_number(trials) -> dict[int, tuple]:
    return {t.number: (t.value, tuple(sorted(t.params.items())), t.user_attrs["seed"])
            for t in trials if t.state == TrialState.COMPLETE}


@pytest.fixture(scope="module")
def one_worker_reference(tmp_path_factory):
    """The random-sampler study of the 3-worker tests, run by a single worker."""
    from bioplaus.data import prepare

    root = tmp_path_factory.mktemp("reference")
    data = prepare("digits", root / "data", max_samples=600, seed=0)
    s = StudyUnderTest("journal", data, root / "out", "random", 8, tag="reference")
    s.run_in_process("study")
    return s


@pytest.mark.parametrize("kind", STORAGES)
def test_three_workers_share_one_study(kind, make_study, tmp_path, one_worker_reference):
    s = make_study(kind, "random", 8)
    s.dataset = one_worker_reference.dataset  # same name as the reference: same tables
    s.name = one_worker_reference.name
    if kind == "postgres":
        s.delete()  # a leftover of an interrupted run
    logs = _wait(s.start_workers(3, tmp_path))
    trials = s.trials()
    complete = _assert_exact(s, trials)
    assert {t.number for t in complete} == set(range(8))  # no worker died: slots are the first 8 asks
    assert {t.user_attrs["origin"] for t in complete} == set(range(8))
    workers = {t.user_attrs["worker"] for t in complete}
    assert len(workers) >= 2, logs  # the trials were shared out (all 3 usually, under load maybe 2)
    # surplus asks at the end were skipped, not evaluated, and left out of trials.csv
    skipped = [t for t in trials if t.state == TrialState.FAIL]
    assert all("skipped" in t.user_attrs for t in skipped)
    # the gather step: same trial numbers, same values as the 1-worker study
    df = s.export()
    assert list(df["number"]) == list(range(8)) and (df["state"] == "COMPLETE").all()
    ref = pd.read_csv(one_worker_reference.out / "trials.csv")
    cols = ["number", "value", "accuracy", "seed"] + [c for c in ref.columns if c.startswith("param_")]
    pd.testing.assert_frame_equal(df[cols], ref[cols])
    assert _values_by_number(trials) == _values_by_number(one_worker_reference.trials())


def _freeze_mid_trial(s: StudyUnderTest, procs, exclude=(), timeout=90):
    """SIGSTOP a worker while it evaluates a trial; return (process, its RUNNING trial)."""
    host = socket.gethostname()
    deadline = time.time() + timeout
    while time.time() < deadline:
        trials = s.trials()
        if sum(t.state == TrialState.COMPLETE for t in trials) >= 2:
            for p in procs:
                if p in exclude or p.poll() is not None:
                    continue
                if any(t.state == TrialState.RUNNING and t.user_attrs.get("worker") == f"{host}:{p.pid}"
                       and "seed" in t.user_attrs for t in trials):
                    os.kill(p.pid, signal.SIGSTOP)
                    mine = [t for t in s.trials() if t.state == TrialState.RUNNING
                            and t.user_attrs.get("worker") == f"{host}:{p.pid}" and "seed" in t.user_attrs]
                    if mine:
                        return p, mine[0]
                    os.kill(p.pid, signal.SIGCONT)  # it finished that trial meanwhile: try again
        time.sleep(0.1)
    for p in procs:
        p.kill()
    pytest.fail("no worker was caught mid-trial")


@pytest.mark.parametrize("kind", STORAGES)
def test_killed_and_frozen_workers_do_not_lose_the_study(kind, make_study, tmp_path):
    s = make_study(kind, "random", 8)
    procs = s.start_workers(3, tmp_path)
    frozen, frozen_trial = _freeze_mid_trial(s, procs)  # alive, heartbeat stopped (a hung node)
    killed, killed_trial = _freeze_mid_trial(s, procs, exclude=(frozen,))
    os.kill(killed.pid, signal.SIGKILL)  # a worker killed mid-trial
    survivor = next(p for p in procs if p not in (frozen, killed))
    try:
        survivor.wait(timeout=150)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    log = survivor.log_path.read_text()
    assert survivor.returncode == 0, log
    assert f"trial {killed_trial.number} was left running by a dead worker: re-queued" in log
    assert f"trial {frozen_trial.number} was left running by a dead worker: re-queued" in log
    if kind == "postgres":  # the hung worker was found by optuna's own heartbeat
        line = next(ln for ln in log.splitlines() if f"trial {frozen_trial.number} was left running" in ln)
        assert "optuna heartbeat stale" in line
    trials = s.trials()
    _assert_exact(s, trials)
    for dead in (killed_trial, frozen_trial):
        assert trials[dead.number].state == TrialState.FAIL
        retry = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs["origin"] == dead.number]
        assert len(retry) == 1 and retry[0].number > dead.number
        assert retry[0].params == dead.params and retry[0].user_attrs["seed"] == dead.user_attrs["seed"]
    # the resumed worker finds its trial failed by the others, drops its result and stops cleanly
    frozen.wait(timeout=60)
    frozen_log = frozen.log_path.read_text()
    assert frozen.returncode == 0, frozen_log
    assert f"trial {frozen_trial.number}: another worker declared this worker dead" in frozen_log
    assert s.trials()[frozen_trial.number].state == TrialState.FAIL
    df = s.export()
    assert (df["state"] == "COMPLETE").sum() == 8 and df["number"].is_unique
    failed = df[df["state"] == "FAIL"]
    assert sorted(failed["number"]) == sorted([killed_trial.number, frozen_trial.number])
    assert failed["message"].str.contains("worker died during this trial").all()


@pytest.mark.parametrize("kind", STORAGES)
def test_gp_workers_do_not_evaluate_the_same_point_twice(kind, make_study, tmp_path):
    s = make_study(kind, "gp", 8)
    logs = _wait(s.start_workers(3, tmp_path))
    trials = s.trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8, logs
    assert len({t.number for t in trials}) == len(trials)
    points = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(points)) == len(points), logs
    assert len({t.user_attrs["origin"] for t in complete}) == 8


# --------------------------------------------------------------------------- cluster profile
@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="snakemake-executor-plugin-slurm is not installed (pip install 'bioplaus[slurm]')")
def test_slurm_profile_dry_run_fans_studies_out_to_workers(tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "datasets: {digits: {max_samples: 300}}\nmodels: [mlp]\nsamplers: [gp, random]\n"
        "n_trials: 6\nrepeats: 0\nworkers: 3\nthreads: 2\n"
        "storage: postgresql://bioplaus:secret@db.example.org:5432/bioplaus\n"
    )
    cmd = [sys.executable, "-m", "snakemake", "-n", "--profile", str(REPO / "workflow/profiles/slurm"),
           "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    jobs = dict(ln.split()[:2] for ln in out.splitlines() if ln.split()[:1] in (["study_worker"], ["study"]))
    assert jobs == {"study_worker": "6", "study": "2"}  # 2 studies x 3 workers, one gather each
    assert "slurm_partition=<your-partition>" in out  # the profile's default resources were applied
    worker_cmds = [ln for ln in out.splitlines() if "--worker-only" in ln]
    assert worker_cmds and all("--storage postgresql://bioplaus@db.example.org:5432/bioplaus" in ln
                               and "--threads 2" in ln for ln in worker_cmds)
    assert "secret" not in out  # the password travels by environment, never on a command line


# --------------------------------------------------------------------------- a failing evaluation
def _build_sometimes_failing(params, *, input_shape, n_classes, epochs, random_state, options):
    from conftest import NearestMeanClassifier

    return NearestMeanClassifier(mode=params["mode"], shrink=params["shrink"], sleep=0.0)


def _register_fake_error():
    from optuna.distributions import CategoricalDistribution

    from bioplaus.models.registry import ModelSpec, register

    register(ModelSpec(
        name="fake-error", label="Fake, sometimes raising", build=_build_sometimes_failing,
        search_space=lambda options=None: {"mode": CategoricalDistribution(["ok", "error"]),
                                           "shrink": FloatDistribution(0.5, 1.5)},
        default_params={"mode": "ok", "shrink": 1.0},
    ))


def test_evaluation_error_is_replaced_and_the_study_still_ends_exact(tmp_path, prepared_digits):
    """A trial whose evaluation raises retires its slot; a new ask replaces it (no endless loop)."""
    from bioplaus.data import load_prepared
    from bioplaus.study import StudySettings, run_worker, trials_frame

    _register_fake_error()
    data = load_prepared(prepared_digits)
    settings = StudySettings(dataset="digits", model="fake-error", sampler="random", n_trials=5,
                             n_folds=2, epochs=1, seed=11, max_retries=10)
    study = run_worker(settings, open_storage(tmp_path / "s.journal"), data.X, data.y, data.input_shape,
                       heartbeat_seconds=0.5, stale_after=5)
    trials = study.get_trials()
    errors = [t for t in trials if t.state == TrialState.FAIL]
    assert errors and all(t.user_attrs["error"] and "boom" in t.user_attrs["message"] for t in errors)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 5 and all(t.params["mode"] == "ok" for t in complete)
    df = trials_frame(study, settings)
    assert len(df) == len(trials) and (df["state"] == "COMPLETE").sum() == 5


def test_errors_in_a_row_stop_the_study_with_one_line(tmp_path, prepared_digits):
    from bioplaus.data import load_prepared
    from bioplaus.errors import StudyError
    from bioplaus.study import StudySettings, run_worker

    _register_fake_error()
    data = load_prepared(prepared_digits)
    settings = StudySettings(dataset="digits", model="fake-error", sampler="random", n_trials=50,
                             n_folds=2, epochs=1, seed=11, max_retries=2)
    with pytest.raises(StudyError, match="2 configurations in a row failed with an error.*max_retries"):
        run_worker(settings, open_storage(tmp_path / "s.journal"), data.X, data.y, data.input_shape)


def _build_raising_config_error(params, **kw):
    raise ConfigError("model_options.broken.width: 'two' is not of type 'integer'")


def test_a_model_that_cannot_be_built_stops_the_study_at_the_first_trial(tmp_path, prepared_digits):
    from optuna.distributions import CategoricalDistribution

    from bioplaus.data import load_prepared
    from bioplaus.models.registry import ModelSpec, register
    from bioplaus.study import StudySettings, run_worker

    register(ModelSpec(name="broken", label="Broken", build=_build_raising_config_error,
                       search_space=lambda options=None: {"mode": CategoricalDistribution(["ok"])},
                       default_params={"mode": "ok"}))
    data = load_prepared(prepared_digits)
    settings = StudySettings(dataset="digits", model="broken", sampler="random", n_trials=5, n_folds=2,
                             epochs=1, seed=1)
    path = tmp_path / "s.journal"
    with pytest.raises(ConfigError, match=r"stopped: model 'broken' cannot be built: model_options.broken.width"):
        run_worker(settings, open_storage(path), data.X, data.y, data.input_shape)
    study = optuna.load_study(study_name=settings.study_name, storage=open_storage(path))
    assert len(study.trials) == 1 and study.trials[0].user_attrs["fatal"]


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "bioplaus", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.parametrize("extra, message", [
    (["--n-trials", "0"], "n_trials=0: must be an integer of at least 1 (config key `n_trials`, option --n-trials)"),
    (["--n-trials", "-1"], "n_trials=-1: must be an integer of at least 1"),
    (["--n-trials", "3", "--epochs", "0"], "epochs=0: must be an integer of at least 1 (config key `epochs`"),
    (["--n-trials", "3", "--folds", "400"], "n_folds=400 is more than the"),
    (["--n-trials", "3", "--model", "segdend", "--options", '{"units_per_class": "two"}'],
     "model_options.segdend.units_per_class: 'two'"),
    (["--n-trials", "3", "--model", "cnn", "--options", '{"foo": 1}'], "model_options.cnn: unknown option 'foo'"),
])
def test_cli_settings_that_cannot_run_exit_2_before_any_trial(tmp_path, prepared_digits, extra, message):
    args = ["study", "--data", str(prepared_digits), "--model", "mlp", "--sampler", "random",
            "--out", str(tmp_path / "out"), "--threads", "1"]
    # argparse keeps the last --model: the parametrised one wins
    proc = _cli(*args, *extra)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("bioplaus: error:") and message in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr and "trial 0" not in proc.stderr
    assert not (tmp_path / "out" / "trials.csv").exists()


@pytest.mark.skipif(importlib.util.find_spec("psycopg2") is None, reason="psycopg2 is not installed")
def test_an_unreachable_postgresql_is_one_line_with_the_password_redacted(tmp_path, prepared_digits):
    proc = _cli("study", "--data", str(prepared_digits), "--model", "mlp", "--sampler", "random",
                "--out", str(tmp_path / "out"), "--n-trials", "2",
                "--storage", "postgresql://u:s3cr3t@127.0.0.1:1/db")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "cannot reach the study storage postgresql://u:***@127.0.0.1:1/db" in lines[0]
    assert "s3cr3t" not in proc.stderr and "Traceback" not in proc.stderr
