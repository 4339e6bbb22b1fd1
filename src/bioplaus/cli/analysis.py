"""Subcommands that turn trials into tables and figures (see :mod:`bioplaus.analysis`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bioplaus.errors import ConfigError


def _frames(args):
    from bioplaus.analysis import load_trials

    trials = load_trials(args.trials)
    repeats = None
    if getattr(args, "repeats", None):
        repeats = load_trials(args.repeats)  # same reader: flags parsed as booleans
    reference = None
    if getattr(args, "reference", None):
        from bioplaus.analysis.reference import load_reference_logs

        reference = load_reference_logs(args.reference)
    return trials, repeats, reference


def _stem(path: str) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".png", ".pdf") else p


def cmd_summarize(args) -> None:
    import pandas as pd

    from bioplaus.analysis import summarize

    trials, repeats, reference = _frames(args)
    table = summarize(trials, repeats)
    if reference is not None:
        table = pd.concat([table, summarize(reference)], ignore_index=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"wrote {args.out}", file=sys.stderr)


def cmd_figure(args) -> None:
    from bioplaus.analysis import figures

    trials, repeats, reference = _frames(args)
    stem = _stem(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if args.kind == "robustness":
        samplers = list(dict.fromkeys(trials["sampler"]))
        sampler = args.sampler or ("gp" if "gp" in samplers else samplers[0])
        paths = figures.plot_robustness(trials, stem, reference=reference, repeats=repeats, sampler=sampler)
    elif args.kind == "learns":
        paths = figures.plot_learns_curves(trials, stem)
    elif args.kind == "learns-by-epoch":
        paths = figures.plot_learns_by_epoch(trials, stem, sampler=args.sampler or "random")
    else:  # pragma: no cover - argparse restricts choices
        raise ConfigError(f"unknown figure {args.kind}")
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)


def cmd_learning(args) -> None:
    from bioplaus.analysis import learning_table, load_trials

    table = learning_table(load_trials(args.trials))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"wrote {args.out}", file=sys.stderr)


def _space(model: str, options: str):
    from bioplaus.models import get_model

    return get_model(model).search_space(json.loads(options or "{}"))


def cmd_importance(args) -> None:
    from bioplaus.analysis import figures
    from bioplaus.analysis import importance, load_trials

    import optuna
    import pandas as pd

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per model
    trials = load_trials(args.trials)
    stem = _stem(args.out_figure)
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_csv).parent.mkdir(parents=True, exist_ok=True)
    try:
        table = importance(trials, _space(args.model, args.options), seed=args.seed)
    except ValueError as exc:  # too few usable trials: record why, draw a notice
        reason = str(exc)
        pd.DataFrame([{"dataset": _first(trials, "dataset"), "model": args.model, "param": None,
                       "evaluator": None, "importance": None, "note": reason}]).to_csv(args.out_csv, index=False)
        _notice_figure(stem, f"No importance for {args.model}: {reason}")
        print(f"importance not computed: {reason}", file=sys.stderr)
        return
    table.to_csv(args.out_csv, index=False)
    figures.plot_importance(table, stem)
    print(f"wrote {args.out_csv} and {stem}.png/.pdf", file=sys.stderr)


def _first(frame, column):
    return frame[column].iloc[0] if column in frame and len(frame) else None


def _notice_figure(stem: Path, text: str) -> None:
    """A figure that says why the analysis could not be drawn (so the target still exists)."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, textwrap.fill(text, 70), ha="center", va="center", fontsize=10)
    for ext in (".png", ".pdf"):
        fig.savefig(str(stem) + ext, dpi=120)
    plt.close(fig)


def cmd_sensitivity(args) -> None:
    from bioplaus.analysis import figures
    from bioplaus.analysis import load_trials

    trials = load_trials(args.trials)
    stem = _stem(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    figures.plot_sensitivity(trials, _space(args.model, args.options), stem)
    print(f"wrote {stem}.png/.pdf", file=sys.stderr)


def cmd_compare(args) -> None:
    from bioplaus.analysis import compare, load_trials

    trials = load_trials(args.trials)
    table = compare(trials, sampler=args.sampler, n_boot=args.n_boot, seed=args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"wrote {args.out}", file=sys.stderr)


def add_commands(sub) -> None:
    s = sub.add_parser("summarize", help="summary.csv: accuracy distribution and robustness metrics per study")
    s.add_argument("--trials", nargs="+", required=True)
    s.add_argument("--repeats", nargs="*", default=None)
    s.add_argument("--reference", default=None, help="folder of the 2019 study's bo_logs_*.json")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_summarize)

    s = sub.add_parser("learning", help="learning.csv: robustness metrics after each training epoch")
    s.add_argument("--trials", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_learning)

    s = sub.add_parser("figure", help="robustness, learns-curves or learns-by-epoch figure (PNG and PDF)")
    s.add_argument("kind", choices=["robustness", "learns", "learns-by-epoch"])
    s.add_argument("--trials", nargs="+", required=True)
    s.add_argument("--repeats", nargs="*", default=None)
    s.add_argument("--reference", default=None)
    s.add_argument("--sampler", default=None,
                   help="sampler drawn (robustness: default gp; learns-by-epoch: default random)")
    s.add_argument("--out", required=True, help="output stem (.png and .pdf are written)")
    s.set_defaults(func=cmd_figure)

    s = sub.add_parser("importance", help="fANOVA and PED-ANOVA importances from random-sampler trials")
    s.add_argument("--trials", nargs="+", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--options", default="{}")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out-csv", required=True)
    s.add_argument("--out-figure", required=True)
    s.set_defaults(func=cmd_importance)

    s = sub.add_parser("sensitivity", help="accuracy against each hyperparameter (random-sampler trials)")
    s.add_argument("--trials", nargs="+", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--options", default="{}")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_sensitivity)

    s = sub.add_parser("compare", help="segregated-dendrite vs backprop: Mann-Whitney U, bootstrap CIs")
    s.add_argument("--trials", nargs="+", required=True)
    s.add_argument("--sampler", default="random")
    s.add_argument("--n-boot", type=int, default=2000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_compare)
