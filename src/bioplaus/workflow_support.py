"""What the Snakefile does at parse time so that "run the same command again" always works.

Snakemake parses the Snakefile before it locks the working directory, builds
the DAG or deletes any output, so the Snakefile calls these functions first:

* :func:`read_config`: the config files read with bioplaus's YAML loader
  (YAML 1.2 floats such as ``1e300``; a syntax error names the file and line),
  ``--config`` overrides applied on top;
* :func:`clear_stale_locks`: Snakemake's directory lock of a killed run is
  removed when no other live Snakemake process works in this directory
  (Linux ``/proc``); when that cannot be known, nothing is removed and the
  safe ``snakemake --unlock`` is advised;
* :func:`check_stored_studies`: a study whose journal exists but was made
  with other settings (e.g. another ``epochs``) stops the run before
  Snakemake deletes its ``trials.csv``/``best.json`` to rebuild them.

* :func:`rerun_incomplete_always`: Snakemake's ``--rerun-incomplete`` on, so
  that a job cut by a kill is re-run (its study resumes from its storage,
  which is no declared output) instead of stopping the run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from bioplaus.config import load_config_file
from bioplaus.errors import ConfigError


def read_config(files: Iterable[str | os.PathLike], overrides: Mapping[str, Any] | None = None) -> dict:
    """The merged config of ``files`` (later ones update earlier ones), then ``overrides``."""
    from snakemake.utils import update_config

    config: dict = {}
    for f in files:
        update_config(config, load_config_file(f))
    if overrides:
        update_config(config, dict(overrides))
    return config


def rerun_incomplete_always(workflow) -> None:
    """Have ``workflow`` (Snakemake's ``Workflow`` object, the Snakefile's ``workflow``)
    rebuild incomplete outputs as ``--rerun-incomplete`` does.

    Snakemake gives the workflow its DAG settings only after the Snakefile is
    parsed (``DAGApi`` assigns ``workflow.dag_settings``), so the setting cannot
    simply be written at parse time: the workflow's class is given a
    ``dag_settings`` property whose setter turns ``force_incomplete`` on in the
    settings it receives. Without it a killed run stops the next one with
    "IncompleteFilesException"."""
    cls = type(workflow)
    if getattr(cls, "_bioplaus_rerun_incomplete", False):
        return

    def _get(self):
        return self.__dict__.get("_bioplaus_dag_settings")

    def _set(self, value):
        if value is not None:
            value.force_incomplete = True
        self.__dict__["_bioplaus_dag_settings"] = value

    current = workflow.__dict__.pop("dag_settings", None)
    workflow.__class__ = type(cls.__name__, (cls,), {
        "dag_settings": property(_get, _set), "_bioplaus_rerun_incomplete": True,
        "__module__": cls.__module__, "__doc__": cls.__doc__})
    workflow.dag_settings = current


def _is_snakemake(cmdline: list[str]) -> bool:
    head = [os.path.basename(a) for a in cmdline[:3]]
    return any(h == "snakemake" or h.startswith("snakemake-") for h in head[:1]) or \
        (len(cmdline) > 2 and cmdline[1] == "-m" and cmdline[2] == "snakemake") or \
        any(h == "snakemake" for h in head[1:2])


def other_snakemake_here(workdir: str | os.PathLike) -> bool | None:
    """True if another live Snakemake process has ``workdir`` as its working directory,
    False if none has, None if that cannot be told (no ``/proc``, unreadable processes)."""
    proc = Path("/proc")
    if not (proc / "self" / "cwd").exists():
        return None
    here = os.path.realpath(workdir)
    mine = {os.getpid()}  # not the parent: a job's Snakemake is the child of the one holding the lock
    unsure = False
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read: its command line is unknown
        args = [a.decode(errors="replace") for a in cmdline if a]
        if not args or not _is_snakemake(args):
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except FileNotFoundError:
            continue
        except OSError:
            unsure = True  # a snakemake whose directory we may not see
            continue
        if os.path.realpath(cwd) == here:
            return True
    return None if unsure else False


def clear_stale_locks(workdir: str | os.PathLike = ".", *, log=print) -> bool:
    """Remove Snakemake's locks in ``workdir/.snakemake/locks`` left by a killed run; True if removed.

    Only when no other live Snakemake process works in ``workdir`` (a running
    instance keeps its lock); if that cannot be known, the locks stay and
    ``log`` gets the safe advice."""
    locks = Path(workdir) / ".snakemake" / "locks"
    found = sorted(locks.glob("*")) if locks.is_dir() else []
    if not found:
        return False
    other = other_snakemake_here(workdir)
    if other is None:
        log("bioplaus: Snakemake's directory lock is present and whether another Snakemake runs here cannot "
            "be told; if none does, run `snakemake --unlock` once, then the same command again")
        return False
    if other:
        return False  # a live instance: Snakemake reports the lock itself
    for f in found:
        try:
            f.unlink()
        except FileNotFoundError:
            pass
    log(f"bioplaus: removed the stale Snakemake lock of a killed run ({len(found)} lock files in {locks}; "
        "no other Snakemake runs in this directory)")
    return True


def _data_fingerprint(results: Path, dataset: str) -> str | None:
    from bioplaus.study.settings import data_fingerprint

    meta = results / "data" / dataset / "meta.json"
    if not meta.exists():
        return None
    try:
        return data_fingerprint(json.loads(meta.read_text()))
    except (OSError, ValueError):
        return None


def expected_fingerprint(config: Mapping[str, Any], dataset: str, model: str, sampler: str) -> dict:
    """The settings fingerprint the workflow's study job for (dataset, model, sampler) will store,
    as the CLI builds it from the command line the workflow writes (without ``data``)."""
    time_limit = config.get("time_limit")
    return {
        "dataset": dataset, "model": model, "sampler": sampler,
        "n_folds": int(config["n_folds"]), "epochs": int(config["epochs"]), "seed": int(config["seed"]),
        "time_limit": float(time_limit) if time_limit else None,
        "options": json.loads(json.dumps((config.get("model_options") or {}).get(model) or {})),
        "n_initial_points": int(config["n_initial_points"]), "kappa": float(config["kappa"]),
    }


def check_stored_studies(config: Mapping[str, Any], results: str | os.PathLike = "results") -> None:
    """Raise :class:`~bioplaus.errors.ConfigError` if a study's journal under ``results`` holds
    settings other than ``config``'s (before Snakemake deletes any of its outputs).

    Only journal storages are checked here (an RDB study is checked by its job,
    which refuses to resume it, as every study job does)."""
    from bioplaus.study.storage import fingerprint_diffs, stored_fingerprint

    if config.get("storage"):
        return
    results = Path(results)
    problems = []
    for dataset in config["datasets"]:
        data_fp = _data_fingerprint(results, dataset)
        for model in config["models"]:
            for sampler in config["samplers"]:
                journal = results / dataset / model / sampler / "study.journal"
                stored = stored_fingerprint(journal, f"{dataset}/{model}/{sampler}")
                if stored is None:
                    continue
                wanted = expected_fingerprint(config, dataset, model, sampler)
                if data_fp is not None:
                    wanted["data"] = data_fp
                else:
                    stored = {k: v for k, v in stored.items() if k != "data"}
                diffs = fingerprint_diffs(stored, wanted)
                if diffs:
                    problems.append(f"{journal}: " + "; ".join(diffs))
    if problems:
        raise ConfigError(
            "these studies already hold trials made with other settings, and re-running them would "
            "replace their tables:\n  " + "\n  ".join(problems)
            + "\nRestore those settings to resume them, or keep them and use a new results folder "
            "(`snakemake --directory NEW ...`), or discard them (delete each study.journal, or "
            "`bioplaus study ... --fresh`).")
