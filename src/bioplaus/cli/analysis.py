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
    space = _space(args.model, args.options)
    try:
        table = importance(trials, space, seed=args.seed, n_boot=args.n_boot)
        if args.out_interactions:
            from bioplaus.analysis import interactions

            Path(args.out_interactions).parent.mkdir(parents=True, exist_ok=True)
            interactions(trials, space, seed=args.seed, n_boot=args.n_boot_interactions).to_csv(
                args.out_interactions, index=False)
    except ValueError as exc:  # too few usable trials: record why, draw a notice
        reason = str(exc)
        pd.DataFrame([{"dataset": _first(trials, "dataset"), "model": args.model, "param": None,
                       "evaluator": None, "importance": None, "note": reason}]).to_csv(args.out_csv, index=False)
        if args.out_interactions:
            pd.DataFrame([{"dataset": _first(trials, "dataset"), "model": args.model,
                           "note": reason}]).to_csv(args.out_interactions, index=False)
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


def _model_options(text: str) -> dict:
    options = json.loads(text or "{}")
    if not isinstance(options, dict):
        raise ConfigError("--model-options must be a JSON object {model: {option: value}}")
    return options


def _write(table, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    print(f"wrote {path}", file=sys.stderr)


def cmd_tunability(args) -> None:
    from bioplaus.analysis import load_trials
    from bioplaus.analysis.tunability import tunability, tunability_shares

    trials = load_trials(args.trials)
    repeats = load_trials(args.repeats) if args.repeats else None
    options = _model_options(args.model_options)
    _write(tunability(trials, repeats, options=options), args.out)
    _write(tunability_shares(trials, repeats, options=options, seed=args.seed), args.out_params)


def cmd_trials_needed(args) -> None:
    from bioplaus.analysis import figures, load_trials
    from bioplaus.analysis.trials_needed import expected_max_curves
    from bioplaus.analysis.tunability import tunability

    trials = load_trials(args.trials)
    repeats = load_trials(args.repeats) if args.repeats else None
    curves = expected_max_curves(trials, n_boot=args.n_boot, seed=args.seed)
    _write(curves, args.out)
    defaults = tunability(trials, repeats) if repeats is not None else None
    chance = trials.groupby("dataset")["chance"].median() if "chance" in trials else {}
    for stem in args.figures:
        stem = _stem(stem)
        dataset = stem.name.removeprefix(args.figure_prefix)
        if dataset not in set(curves["dataset"]):
            _notice_figure(stem, f"No random-sampler trials on {dataset}: no curve to draw")
            continue
        figures.plot_expected_max(curves, stem, dataset=dataset, defaults=defaults,
                                  chance=float(chance[dataset]) if dataset in chance else None)
        print(f"wrote {stem}.png/.pdf", file=sys.stderr)


def cmd_aggregates(args) -> None:
    from bioplaus.analysis import load_trials
    from bioplaus.analysis.aggregates import improvement_table, iqm_table

    trials = load_trials(args.trials)
    _write(iqm_table(trials, n_boot=args.n_boot, seed=args.seed), args.out_iqm)
    _write(improvement_table(trials, n_boot=args.n_boot, seed=args.seed), args.out_improvement)


def cmd_transfer_table(args) -> None:
    import pandas as pd

    from bioplaus.analysis import load_trials
    from bioplaus.analysis.transfer import transfer_table

    frames = [pd.read_csv(p) for p in args.rows]  # read as they are: load_trials keeps trial columns only
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    trials = load_trials(args.trials) if args.trials else None
    repeats = load_trials(args.repeats) if args.repeats else None
    _write(transfer_table(rows, trials=trials, repeats=repeats), args.out)


def cmd_alignment_figure(args) -> None:
    import pandas as pd

    from bioplaus.analysis import figures

    frames = [pd.read_csv(path) for path in args.alignment]
    stem = _stem(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    try:
        paths = figures.plot_alignment(table, stem)
    except ValueError as exc:  # nothing to draw (every run invalid): the target still exists, saying why
        _notice_figure(stem, f"No alignment figure: {exc}")
        print(f"alignment figure not drawn: {exc}", file=sys.stderr)
        return
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)


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
    s.add_argument("--n-boot", type=int, default=0,
                   help="bootstrap resamples of the trials for 95%% intervals (0: none)")
    s.add_argument("--out-interactions", default=None, help="also write the largest pairwise interactions")
    s.add_argument("--n-boot-interactions", type=int, default=0, help="bootstrap resamples of the interactions")
    s.add_argument("--out-csv", required=True)
    s.add_argument("--out-figure", required=True)
    s.set_defaults(func=cmd_importance)

    s = sub.add_parser("sensitivity", help="accuracy against each hyperparameter (random-sampler trials)")
    s.add_argument("--trials", nargs="+", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--options", default="{}")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_sensitivity)

    s = sub.add_parser("compare", help="each non-backprop model vs each backprop model: Mann-Whitney U, bootstrap CIs")
    s.add_argument("--trials", nargs="+", required=True)
    s.add_argument("--sampler", default="random")
    s.add_argument("--n-boot", type=int, default=2000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("tunability", help="tunability (Probst et al. 2019): default vs best, tuning risk, per-parameter shares")
    s.add_argument("--trials", nargs="+", required=True, help="trials.csv of every sampler")
    s.add_argument("--repeats", nargs="*", default=None, help="repeats.csv (the default's refits)")
    s.add_argument("--model-options", default="{}", help="JSON {model: model_options}")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--out-params", required=True)
    s.set_defaults(func=cmd_tunability)

    s = sub.add_parser("trials-needed", help="expected best accuracy after k random trials (Dodge et al. 2019)")
    s.add_argument("--trials", nargs="+", required=True)
    s.add_argument("--repeats", nargs="*", default=None, help="repeats.csv: draws each model's default")
    s.add_argument("--n-boot", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--figures", nargs="*", default=[], help="figure stems <prefix><dataset>, one per dataset")
    s.add_argument("--figure-prefix", default="expected_max_")
    s.set_defaults(func=cmd_trials_needed)

    s = sub.add_parser("aggregates", help="IQM and probability of improvement with stratified bootstrap CIs")
    s.add_argument("--trials", nargs="+", required=True)
    s.add_argument("--n-boot", type=int, default=2000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out-iqm", required=True)
    s.add_argument("--out-improvement", required=True)
    s.set_defaults(func=cmd_aggregates)

    s = sub.add_parser("transfer-table", help="transfer.csv: regret of each dataset's best config on the others")
    s.add_argument("--rows", nargs="*", default=[], help="rows written by `bioplaus transfer`")
    s.add_argument("--trials", nargs="*", default=None)
    s.add_argument("--repeats", nargs="*", default=None)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_transfer_table)

    s = sub.add_parser("alignment-figure", help="angle to backprop against epoch, from alignment.csv files")
    s.add_argument("--alignment", nargs="+", required=True, help="alignment.csv files (bioplaus alignment)")
    s.add_argument("--out", required=True, help="output stem (.png and .pdf are written)")
    s.set_defaults(func=cmd_alignment_figure)
