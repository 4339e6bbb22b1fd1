"""The ``bioplaus`` command: the pipeline's steps, one subcommand each.

Snakemake rules call these subcommands; they can also be run by hand::

    bioplaus datasets | models
    bioplaus download fashion --data-dir data
    bioplaus prepare digits --out results/data/digits
    bioplaus study --data results/data/digits --model mlp --sampler gp --out results/digits/mlp/gp --n-trials 20
    bioplaus export --data ... (write trials.csv/best.json from a study's storage, e.g. while it runs)
    bioplaus repair-journal results/digits/mlp/gp/study.journal [--truncate]
    bioplaus repeats ... | alignment ... | transfer ... | summarize ... | figures ... | importance ...
    bioplaus sensitivity ... | compare ... | alignment-figure ... | tunability ... | trials-needed ...
    bioplaus aggregates ... | transfer-table ...
    bioplaus estimate [--configfile config.yaml] [--cores N] (predicted CPU-hours and wall time)

Errors the user can act on (bad config, missing data, ...) print one message
and exit with status 2, without a traceback.

This is the top layer and the one place where process-wide state is set:
optuna's log level, the plugins that register extra models (``--plugin``,
accepted by every subcommand), and the values a job takes from its
environment (see :mod:`.study`). The subcommands live in :mod:`.data`,
:mod:`.study`, :mod:`.estimate` and :mod:`.analysis`.
"""

from __future__ import annotations

import argparse
import os
import sys

from bioplaus.cli.data import cmd_datasets, cmd_download, cmd_models, cmd_prepare
from bioplaus.cli.study import (
    HEARTBEAT_ENV,
    STALE_AFTER_ENV,
    cmd_alignment,
    cmd_export,
    cmd_repair_journal,
    cmd_repeats,
    cmd_study,
    cmd_transfer,
)
from bioplaus.errors import BioplausError


class _Subcommands:
    """``add_subparsers()`` whose every parser also takes the common options (``--plugin``)."""

    def __init__(self, sub, parents):
        self._sub, self._parents = sub, parents

    def add_parser(self, name, **kwargs):
        return self._sub.add_parser(name, parents=self._parents, **kwargs)


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from bioplaus.study.samplers import SAMPLERS
    from bioplaus.study.slots import MAX_CONSECUTIVE_INVALID, MAX_RETRIES

    p = argparse.ArgumentParser(prog="bioplaus", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first: it registers extra models (repeatable; config key `plugins`)")
    sub = _Subcommands(p.add_subparsers(dest="command", required=True), [common])

    s = sub.add_parser("datasets", help="list datasets and whether their files are here")
    s.add_argument("--data-dir", default="data")
    s.set_defaults(func=cmd_datasets)
    s = sub.add_parser("models", help="list registered models")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("download", help="download a dataset's canonical files (checksums verified)")
    s.add_argument("name")
    s.add_argument("--data-dir", default="data")
    s.set_defaults(func=cmd_download)

    s = sub.add_parser("prepare", help="load a dataset once and store it memory-mappable")
    s.add_argument("name")
    s.add_argument("--out", required=True)
    s.add_argument("--data-dir", default="data")
    s.add_argument("--max-samples", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_prepare)

    def study_args(s, with_sampler=True):
        s.add_argument("--data", required=True, help="folder written by `bioplaus prepare`")
        s.add_argument("--dataset", default=None, help="dataset name in tables (default: the prepared one)")
        s.add_argument("--model", required=True)
        if with_sampler:
            s.add_argument("--sampler", required=True, choices=list(SAMPLERS))
        s.add_argument("--out", required=True)
        s.add_argument("--folds", type=int, default=3)
        s.add_argument("--epochs", type=int, default=10)
        s.add_argument("--seed", type=int, default=1)
        s.add_argument("--time-limit", type=float, default=None, help="seconds of training per fold")
        s.add_argument("--options", default="{}", help="model options as a JSON object")
        s.add_argument("--threads", type=int, default=None)

    for cmd, func, helptext in (
        ("study", cmd_study, "run (or resume) one optimisation study"),
        ("export", cmd_export, "write trials.csv and best.json from a study's storage"),
    ):
        s = sub.add_parser(cmd, help=helptext)
        study_args(s)
        s.add_argument("--n-trials", type=int, required=True)
        s.add_argument("--n-initial-points", type=int, default=5)
        s.add_argument("--kappa", type=float, default=2.5)
        s.add_argument("--storage", default=None, help="optuna storage URL (default: <out>/study.journal)")
        s.add_argument("--max-retries", type=int, default=MAX_RETRIES,
                       help="a configuration whose worker died this many times is retired; the study stops "
                            f"after this many evaluation errors in a row (config key max_retries; default {MAX_RETRIES})")
        s.add_argument("--max-consecutive-invalid", type=int, default=MAX_CONSECUTIVE_INVALID,
                       help="the study stops when this many configurations in a row are invalid or failed "
                            f"(config key max_consecutive_invalid; default {MAX_CONSECUTIVE_INVALID})")
        if cmd == "study":
            s.add_argument("--fresh", action="store_true", help="discard the stored study and start again")
            s.add_argument("--worker-only", action="store_true", help="run trials, write no outputs")
            s.add_argument("--heartbeat-seconds", type=float, default=None,
                           help=f"seconds between a running trial's heartbeats (default: ${HEARTBEAT_ENV}, "
                                "else the library's default; the same for every worker of a study)")
            s.add_argument("--stale-after-seconds", type=float, default=None,
                           help="a running trial whose heartbeat is this old is taken as dead and re-queued "
                                f"(default: ${STALE_AFTER_ENV}, else the library's default; at least twice "
                                "--heartbeat-seconds)")
        s.set_defaults(func=func)

    s = sub.add_parser("repair-journal", help="repair a study journal whose tail was torn (or, with "
                                              "--truncate, drop everything from its first damaged line)")
    s.add_argument("journal")
    s.add_argument("--truncate", action="store_true",
                   help="keep the records before the first damaged line; the rest goes to a backup file")
    s.set_defaults(func=cmd_repair_journal)

    s = sub.add_parser("repeats", help="noise floor: re-evaluate default and best configurations")
    study_args(s, with_sampler=False)
    s.add_argument("--repeats", type=int, default=5)
    s.add_argument("--best", nargs="*", help="SAMPLER=path/to/best.json")
    s.set_defaults(func=cmd_repeats)

    s = sub.add_parser("transfer", help="refit each other dataset's best configuration on this dataset")
    study_args(s, with_sampler=False)
    s.add_argument("--repeats", type=int, default=5)
    s.add_argument("--best", nargs="*", help="DATASET:SAMPLER=path/to/best.json (this dataset's own are skipped)")
    s.set_defaults(func=cmd_transfer)

    s = sub.add_parser("alignment", help="angle to backprop per epoch of the default and best configurations")
    study_args(s, with_sampler=False)
    s.add_argument("--best", nargs="*", help="SAMPLER=path/to/best.json")
    s.add_argument("--repeat", type=int, default=0,
                   help="train with the seeds of this noise-floor repeat (first fold of its split)")
    s.set_defaults(func=cmd_alignment)

    from bioplaus.cli import analysis, estimate  # unconditional: a broken import must fail, not hide commands

    estimate.add_command(sub)
    analysis.add_commands(sub)
    return p


def main(argv=None) -> int:
    import optuna

    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the study logs its own progress lines
    try:
        if args.plugin:
            from bioplaus.models.registry import load_plugins

            load_plugins(args.plugin)
        args.func(args)
    except BioplausError as exc:
        print(f"bioplaus: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:  # bad input files/arguments: one clear line
        if os.environ.get("BIOPLAUS_DEBUG"):
            raise
        print(f"bioplaus: error: {type(exc).__name__}: {exc} (set BIOPLAUS_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bioplaus: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
