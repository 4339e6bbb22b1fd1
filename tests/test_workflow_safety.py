"""The workflow after kills, with changed settings, bad YAML, secrets and hostile config values.

Each case runs Snakemake on a tiny config in a temporary folder: dry runs
(``-n -p``) and, where it matters, the cheap ``prepare_data`` job for real.
"""

from __future__ import annotations

import base64
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TINY = """\
seed: 3
datasets:
  digits: {max_samples: 300}
models: [mlp]
samplers: [random]
n_trials: 2
epochs: 1
threads: 1
repeats: 0
"""
PREPARED = "results/data/digits/meta.json"


def _snakemake(workdir, *args, configfile="tiny.yaml", timeout=600):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "1", *args]
    if configfile:
        cmd += ["--configfile", str(workdir / configfile)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _work(tmp_path, text=TINY):
    (tmp_path / "tiny.yaml").write_text(text)
    return tmp_path


def test_a_killed_runs_lock_and_incomplete_output_do_not_stop_the_same_command(tmp_path):
    work = _work(tmp_path)
    first = _snakemake(work, PREPARED)
    assert first.returncode == 0, first.stderr[-3000:]
    # what a SIGKILL leaves: Snakemake's lock, and the running job's output marked incomplete
    locks = work / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.input.lock").write_text("")
    (locks / "0.output.lock").write_text(f"{work / PREPARED}\n")
    incomplete = work / ".snakemake" / "incomplete"
    marker = base64.b64encode(PREPARED.encode()).decode()
    (incomplete / marker).parent.mkdir(parents=True, exist_ok=True)
    (incomplete / marker).write_text("")
    again = _snakemake(work, PREPARED)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-3000:]
    assert "removed the stale Snakemake lock of a killed run" in out
    assert "prepare_data" in out  # the incomplete output was rebuilt, not refused
    assert not list(locks.glob("*"))


def test_a_live_snakemake_in_the_same_folder_keeps_its_lock(tmp_path):
    from bioplaus.workflow_support import clear_stale_locks

    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("")
    # a process whose command line is snakemake's, working in this folder
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "-m", "snakemake"],
                            cwd=tmp_path)
    cmdline = Path(f"/proc/{fake.pid}/cmdline")
    deadline = time.monotonic() + 20
    while b"snakemake" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)  # until the child has exec'd (before, /proc shows the parent's command line)
    try:
        import bioplaus.workflow_support as ws

        real = ws._is_snakemake
        ws._is_snakemake = lambda args: real(args) or args[-2:] == ["-m", "snakemake"]
        try:
            assert clear_stale_locks(tmp_path, log=lambda m: None) is False
            assert (locks / "0.input.lock").exists()
        finally:
            ws._is_snakemake = real
    finally:
        fake.kill()
        fake.wait()
    assert clear_stale_locks(tmp_path, log=lambda m: None) is True


def test_changed_fingerprinted_setting_refuses_before_any_output_is_deleted(tmp_path):
    work = _work(tmp_path)
    assert _snakemake(work, PREPARED).returncode == 0
    out = work / "results" / "digits" / "mlp" / "random"
    proc = subprocess.run([sys.executable, "-m", "bioplaus", "study", "--data", str(work / "results/data/digits"),
                           "--dataset", "digits", "--model", "mlp", "--sampler", "random", "--out", str(out),
                           "--n-trials", "1", "--epochs", "1", "--folds", "3", "--seed", "3", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    before = (out / "trials.csv").read_bytes()
    _work(tmp_path, TINY.replace("epochs: 1", "epochs: 2"))
    for args in (["-n"], []):
        run = _snakemake(work, *args)
        text = run.stdout + run.stderr
        assert run.returncode != 0
        assert f"{out / 'study.journal'}" in text or "results/digits/mlp/random/study.journal" in text, text[-3000:]
        assert "epochs: stored 1, now 2" in text and "--fresh" in text and "new results folder" in text
        assert (out / "trials.csv").read_bytes() == before and (out / "best.json").exists()


def test_yaml_errors_name_file_and_line_and_floats_without_a_dot_are_numbers(tmp_path):
    work = _work(tmp_path)
    (work / "config.yaml").write_text(TINY + "model_options: {mlp: {\n  bad\n")
    proc = _snakemake(work, "-n", configfile=None)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "config.yaml, line" in text and "YAML syntax error" in text, text[-2000:]
    _work(tmp_path, TINY + "kappa: 1e-1\ntime_limit: 1e3\n")
    proc = _snakemake(work, "-n", "-p")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "--kappa 0.1" in text and "--time-limit 1000.0" in text


SECRET = "s3cr3t"


def test_the_storage_password_appears_in_no_command_log_or_metadata(tmp_path):
    work = _work(tmp_path, TINY + f"storage: 'postgresql://u:{SECRET}@127.0.0.1:1/db'\n")
    proc = _snakemake(work, "-n", "-p")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "--storage postgresql://u@127.0.0.1:1/db" in text
    assert SECRET not in text
    real = _snakemake(work, PREPARED)  # a real job: metadata and logs are written
    assert real.returncode == 0, real.stderr[-3000:]
    for f in list((work / ".snakemake").rglob("*")) + list((work / "results").rglob("*")):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


HOSTILE = [
    "x' ; touch PWNED ; echo '",
    'x" ; touch PWNED ; echo "',
    "$(touch PWNED)",
    "`touch PWNED`",
    "a b; touch PWNED",
]


def _commands(text):
    """The shell commands a dry run with ``-p`` prints."""
    lines = [ln.strip().removeprefix("Shell command:").strip() for ln in text.splitlines()]
    return [ln for ln in lines if ln.startswith("bioplaus ")]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_config_strings_never_reach_a_shell(tmp_path, value):
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')
    for key, extra in (
        ("data_dir", f'data_dir: "{quoted}"\n'),
        ("reference_logs", f'reference_logs: "{quoted}"\n'),
        ("storage", f'storage: "sqlite:///{quoted}"\n'),
        ("plugins", f'plugins: ["{quoted}"]\n'),
        ("model_options key", f'model_options: {{mlp: {{"{quoted}": 1}}}}\n'),
    ):
        work = tmp_path / key.replace(" ", "_")
        work.mkdir()
        _work(work, TINY + extra)
        proc = _snakemake(work, "-n", "-p")
        text = proc.stdout + proc.stderr
        assert not (work / "PWNED").exists() and not (REPO / "PWNED").exists(), key
        if key in ("plugins", "model_options key"):  # not importable / not an option: refused at parse time
            assert proc.returncode != 0 and "Traceback" not in proc.stdout, text[-2000:]
            continue
        assert proc.returncode == 0, text[-3000:]
        cmds = _commands(text)
        assert cmds, text[-2000:]
        for cmd in cmds:  # run each printed command with `printf` in place of bioplaus: nothing else runs
            echo = "printf '%s\\n' " + cmd[len("bioplaus "):].split(" > ")[0]
            res = subprocess.run(["bash", "-c", echo], cwd=work, capture_output=True, text=True)
            assert res.returncode == 0 and not (work / "PWNED").exists(), (key, cmd, res.stderr)
            words = res.stdout.splitlines()
            assert words == shlex.split(cmd.split(" > ")[0])[1:]
        if key == "data_dir":
            assert any(value in shlex.split(c.split(" > ")[0]) for c in cmds)


def test_a_data_dir_with_a_space_works_for_real(tmp_path):
    work = _work(tmp_path, TINY + 'data_dir: "my data"\n')
    proc = _snakemake(work, PREPARED, "-p")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "--data-dir 'my data'" in proc.stdout + proc.stderr
    assert (work / PREPARED).exists()


@pytest.mark.slow
def test_the_estimate_rule_predicts_the_validated_config_without_its_password(tmp_path):
    work = _work(tmp_path, TINY + "storage: postgresql://bioplaus:s3cret@localhost:5432/bioplaus\n")
    res = _snakemake(work, "estimate", "--config", "n_trials=7")
    assert res.returncode == 0, res.stderr[-3000:]
    text = (work / "results" / "estimate.txt").read_text()
    # the --config override and the schema's defaults reach the prediction
    assert "7 valid trials x 3 folds x 1 epochs" in text and "wall time on 1 cores" in text
    assert "mlp" in text and "total" in text
    assert "s3cret" not in (work / "results" / "estimate.txt.config.json").read_text()
    assert not (work / "results" / "digits").exists()  # nothing of the study itself ran
