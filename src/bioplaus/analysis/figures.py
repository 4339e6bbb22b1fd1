"""Figures of the robustness study (matplotlib, Agg canvas; no pyplot state).

Every ``plot_*`` function draws one figure, writes ``<stem>.png`` (150 dpi) and
``<stem>.pdf`` (parent folders created) and returns a :class:`SavedFigure`
(``png, pdf = plot_...(...)`` unpacks the two paths; ``.figure`` is the
matplotlib Figure for inspection). Models keep one colour and label in every
figure (:data:`MODEL_COLORS`; labels from the model and dataset registries, see
:func:`model_label`, :func:`dataset_label`); accuracy axes run from
chance (or the lowest accuracy, if below) to 1. Accuracies are fractions of
test images classified correctly, averaged over the cross-validation folds.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullFormatter
from scipy.stats import rankdata
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from bioplaus.analysis.active import REGISTRY, active_matrix
from bioplaus.analysis.loading import _prepare
from bioplaus.analysis.statistics import (
    LEARNS_MARGIN,
    censored_mask,
    learning_table,
    learns_curve,
    noise_table,
    valid_mask,
)
from bioplaus.errors import ConfigError
from bioplaus.models import get_model

MODEL_ORDER = ["mlp", "cnn", "segdend"]
#: Okabe-Ito colour-blind-safe palette; the same model has the same colour everywhere.
MODEL_COLORS = {"mlp": "#0072B2", "cnn": "#009E73", "segdend": "#D55E00"}
#: colours of the other models, in model order: the rest of Okabe-Ito (Okabe & Ito 2008,
#: "Color universal design") but its black, which the figures keep for keys (line styles,
#: markers, medians), then Paul Tol's colour-blind-safe "muted" scheme (Tol 2021, "Colour
#: schemes", SRON/EPS/TN/09-002); beyond them the list repeats with a new line style
_EXTRA_COLORS = ["#CC79A7", "#E69F00", "#56B4E9", "#332288", "#117733", "#44AA99",
                 "#88CCEE", "#DDCC77", "#CC6677", "#AA4499", "#882255", "#999933"]
_LINE_STYLES = ["-", "--", "-.", ":"]
DATASET_ORDER = ["mnist", "fashion", "cifar10", "mnist-5k", "digits"]
SAMPLER_LABELS = {"gp": "Gaussian-process", "tpe": "TPE", "random": "uniformly random"}
ACCURACY_LABEL = "CV test accuracy"
_PNG_DPI = 150
#: integer parameters with at most this many values are drawn as box plots per value
_MAX_DISCRETE_BOXES = 8


@dataclass(frozen=True)
class SavedFigure:
    """Paths of the written files and the Figure (no pyplot state: nothing to close).

    Iterates as (png, pdf), so ``png, pdf = plot_...(...)`` works.
    """

    png: Path
    pdf: Path
    figure: Figure

    def __iter__(self) -> Iterator[Path]:
        return iter((self.png, self.pdf))

    @property
    def paths(self) -> tuple[Path, Path]:
        return (self.png, self.pdf)


# ----------------------------------------------------------------------------- helpers
def model_label(model: str) -> str:
    """The model registry's label of ``model`` (``ModelSpec.label``); the name itself
    for a model the registry does not know (e.g. one only in the 2019 logs)."""
    try:
        return get_model(model).label
    except ConfigError:
        return model


def _extra_index(model: str, models) -> int:
    if models is None:
        return sum(map(ord, model))
    others = [m for m in _ordered(models, MODEL_ORDER) if m not in MODEL_COLORS]
    return others.index(model) if model in others else len(others) + sum(map(ord, model))


def model_color(model: str, models=None) -> str:
    """Fixed colour of a model (:data:`MODEL_COLORS`); the other models of ``models`` take
    the colours of ``_EXTRA_COLORS`` in model order (distinct for up to 12 of them; without
    ``models``, a stable colour by name)."""
    if model in MODEL_COLORS:
        return MODEL_COLORS[model]
    return _EXTRA_COLORS[_extra_index(model, models) % len(_EXTRA_COLORS)]


def model_linestyle(model: str, models=None) -> str:
    """Solid for the fixed models and the first round of extra colours, then dashed, ..."""
    if model in MODEL_COLORS:
        return "-"
    index = _extra_index(model, models) if models is not None else 0
    return _LINE_STYLES[(index // len(_EXTRA_COLORS)) % len(_LINE_STYLES)]


def dataset_label(dataset: str) -> str:
    """The dataset registry's label of ``dataset``; the name itself when unknown.

    The one place the analysis reads the data layer (imported here, when a label
    is drawn, so that the analysis does not load the data layer otherwise).
    """
    from bioplaus.data import dataset_info

    try:
        return dataset_info(dataset).label
    except ConfigError:
        return dataset


def _ordered(values, order) -> list[str]:
    values = list(dict.fromkeys(values))
    return [v for v in order if v in values] + sorted(v for v in values if v not in order)


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, stem: str | Path) -> SavedFigure:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png = stem.with_name(stem.name + ".png")
    pdf = stem.with_name(stem.name + ".pdf")
    figure.savefig(png, dpi=_PNG_DPI)
    figure.savefig(pdf)
    return SavedFigure(png=png, pdf=pdf, figure=figure)


def _accuracy_limits(accuracies, chance: float) -> tuple[float, float]:
    """Axis limits from just below chance (or the lowest accuracy) to just above 1."""
    values = np.asarray(accuracies, dtype=float)
    values = values[np.isfinite(values)]
    low = min(chance, values.min()) if len(values) else chance
    return max(0.0, low - 0.03), 1.01


def _numbered(trials: pd.DataFrame | None) -> pd.DataFrame | None:
    if trials is None or len(trials) == 0:
        return None
    frame = _prepare(trials)
    if "number" not in frame.columns:  # trial order = row order within each run
        frame["number"] = frame.groupby(["dataset", "model", "sampler", "source"]).cumcount()
    return frame


def _valid_rows(trials: pd.DataFrame | None) -> pd.DataFrame:
    frame = _numbered(trials)
    if frame is None:
        columns = ["dataset", "model", "sampler", "source", "number", "accuracy", "chance"]
        return pd.DataFrame(columns=columns)
    return frame[valid_mask(frame)]


def _censored_rows(trials: pd.DataFrame | None) -> pd.DataFrame:
    """Censored trials with a (partial) accuracy: drawn hollow, never counted."""
    frame = _numbered(trials)
    if frame is None:
        return pd.DataFrame(columns=["dataset", "model", "sampler", "source", "number", "accuracy"])
    return frame[censored_mask(frame) & np.isfinite(frame["accuracy"])]


def _source_label(frame: pd.DataFrame, default: str = "ours") -> str:
    sources = set(frame["source"].astype(str)) if len(frame) else set()
    return "2019 study" if sources == {"2019"} else default


def _legend_columns(figure: Figure, labels: list[str], n_models: int, fontsize: float) -> int:
    """Columns of a figure legend whose first row holds the models, as many as fit.

    Up to ``n_models`` columns (one per model, so the models' colours read as one
    row), fewer when the entries, laid out row by row (:func:`_row_major`), would
    be wider than the figure: widths are the rendered label widths plus the
    handle, the padding and the column spacing of matplotlib's legend settings.
    """
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    renderer = figure.canvas.get_renderer()
    prop = FontProperties(size=fontsize)
    em = fontsize / 72.0  # inches
    text = [renderer.get_text_width_height_descent(label, prop, ismath=False)[0] / figure.dpi
            for label in labels]
    item = (rcParams["legend.handlelength"] + rcParams["legend.handletextpad"]) * em
    spacing = rcParams["legend.columnspacing"] * em
    padding = 2 * (rcParams["legend.borderpad"] + rcParams["legend.borderaxespad"]) * em
    room = figure.get_figwidth() - padding
    for ncol in range(max(1, min(n_models, len(labels))), 1, -1):
        widths = [max(text[j::ncol]) + item for j in range(ncol)]
        if sum(widths) + spacing * (ncol - 1) <= room:
            return ncol
    return 1


def _row_major(entries: list, ncol: int) -> list:
    """``entries`` reordered so that matplotlib's legend, which fills column by column
    (the first ``len % ncol`` columns one entry longer), shows them row by row."""
    return [entry for j in range(ncol) for entry in entries[j::ncol]]


def _wrapped(label: str, width: int = 14) -> str:
    return "\n".join(textwrap.wrap(label, width)) or label


def _title_for(figure: Figure, text: str, fontsize: float) -> str:
    """``text`` wrapped to fit the figure's width (about 0.55 em per character)."""
    width_inches = figure.get_figwidth()
    characters = max(20, int(width_inches * 72 / (0.55 * fontsize)) - 4)
    return "\n".join(textwrap.wrap(text, characters))


# ----------------------------------------------------------------------------- robustness
def plot_robustness(
    trials: pd.DataFrame,
    stem: str | Path,
    *,
    sampler: str = "gp",
    reference: pd.DataFrame | None = None,
    repeats: pd.DataFrame | None = None,
) -> SavedFigure:
    """The review's 3-row figure, one column per dataset, for one sampler's trials.

    Row 1: accuracy of each valid trial in trial order (one line per model);
    row 2: histogram of those accuracies per model (fraction of trials per bin);
    row 3: box plots per model with every trial as a dot. Censored trials
    (stopped by the time limit) are drawn in row 1 as hollow markers at their
    partial accuracy and left out of everything else. ``reference`` (rows of
    :func:`bioplaus.analysis.reference.load_reference_logs`) adds the 2019 study's
    distributions: dashed lines (row 1), dashed outlines (row 2) and hatched
    boxes beside ours (row 3). ``repeats`` (repeats.csv rows) adds, at the
    median of each of our boxes, an error bar of +-1 seed-to-seed standard
    deviation (median over the refitted settings), so hyperparameter spread can
    be told from refitting noise. Raises ``ValueError`` when nothing is left to draw.
    """
    ours = _valid_rows(trials)
    ours = ours[ours["sampler"] == sampler]
    cut = _censored_rows(trials)
    cut = cut[cut["sampler"] == sampler]
    ref = _valid_rows(reference)
    if ours.empty and ref.empty:
        raise ValueError(f"plot_robustness: no valid trials of sampler {sampler!r} to draw")
    ours_label = _source_label(ours)
    noise = noise_table(repeats) if repeats is not None and len(repeats) else None

    datasets = _ordered(list(ours["dataset"]) + list(ref["dataset"]), DATASET_ORDER)
    models = _ordered(list(ours["model"]) + list(ref["model"]), MODEL_ORDER)
    has_ref = not ref.empty
    width = max(6.5, 4.6 * len(datasets) + 0.6)
    figure = _figure(width, 10.5)
    axes = figure.subplots(3, len(datasets), squeeze=False)
    noise_handle = None

    for column, dataset in enumerate(datasets):
        ours_d = ours[ours["dataset"] == dataset]
        ref_d = ref[ref["dataset"] == dataset]
        cut_d = cut[cut["dataset"] == dataset]
        both = pd.concat([ours_d, ref_d])
        chance = float(both["chance"].median())
        low, high = _accuracy_limits(pd.concat([both["accuracy"], cut_d["accuracy"]]), chance)
        trace_ax, hist_ax, box_ax = axes[:, column]
        bins = np.linspace(low, 1.0, 26)

        for model in models:
            color = model_color(model, models)
            for frame, dashed in ((ours_d, False), (ref_d, True)):
                rows = frame[frame["model"] == model].sort_values("number")
                if rows.empty:
                    continue
                acc = rows["accuracy"].to_numpy(dtype=float)
                trace_ax.plot(
                    rows["number"].to_numpy(), acc, color=color,
                    linestyle="--" if dashed else "-", linewidth=1.0 if dashed else 1.4,
                    marker="" if dashed else "o", markersize=2.5, alpha=0.75 if dashed else 0.95,
                )
                weights = np.full(len(acc), 1.0 / len(acc))
                if dashed:
                    hist_ax.hist(acc, bins=bins, weights=weights, histtype="step",
                                 linestyle="--", linewidth=1.4, color=color)
                else:
                    hist_ax.hist(acc, bins=bins, weights=weights, histtype="stepfilled",
                                 alpha=0.3, color=color)
                    hist_ax.hist(acc, bins=bins, weights=weights, histtype="step",
                                 linewidth=1.4, color=color)
            stopped = cut_d[cut_d["model"] == model]
            if len(stopped):  # censored: hollow, not joined to the valid trials' line
                trace_ax.scatter(stopped["number"].to_numpy(), stopped["accuracy"].to_numpy(dtype=float),
                                 s=22, facecolors="none", edgecolors=color, linewidths=1.1, zorder=3)

        # row 3: paired boxes (ours, 2019) per model, every trial as a jittered dot
        rng = np.random.default_rng(column)
        crowded = len(models) * 1.1 > width / len(datasets)  # under ~1.1 inch per model's label
        ticks, tick_labels = [], []
        for index, model in enumerate(models):
            color = model_color(model, models)
            pairs = [(ours_d, False)] + ([(ref_d, True)] if has_ref else [])
            offsets = [-0.2, 0.2] if has_ref else [0.0]
            box_width = 0.34 if has_ref else 0.55
            drawn = False
            for (frame, hatched), offset in zip(pairs, offsets):
                acc = frame.loc[frame["model"] == model, "accuracy"].to_numpy(dtype=float)
                if len(acc) == 0:
                    continue
                drawn = True
                position = index + offset
                box = box_ax.boxplot(
                    acc, positions=[position], widths=box_width, patch_artist=True,
                    showfliers=False, medianprops={"color": "black", "linewidth": 1.5},
                )
                patch = box["boxes"][0]
                if hatched:
                    patch.set(facecolor="white", edgecolor=color, hatch="///", linewidth=1.2)
                else:
                    patch.set(facecolor=color, alpha=0.45, edgecolor=color)
                jitter = rng.uniform(-box_width / 4, box_width / 4, len(acc))
                box_ax.scatter(position + jitter, acc, s=7, color=color, alpha=0.6,
                               linewidths=0, zorder=3)
                if not hatched and noise is not None:
                    match = noise[(noise["dataset"] == dataset) & (noise["model"] == model)]
                    if len(match) and np.isfinite(match["noise_sd"].iloc[0]):
                        # just left of the box, at the height of its median
                        noise_handle = box_ax.errorbar(
                            position - box_width / 2 - 0.06, np.median(acc),
                            yerr=match["noise_sd"].iloc[0], color="black", marker="o",
                            markersize=3, capsize=3, linewidth=1.5, capthick=1.5, zorder=4,
                        )
            if drawn:
                ticks.append(index)
                tick_labels.append(model_label(model) if crowded else _wrapped(model_label(model)))
        box_ax.set_xticks(ticks, tick_labels, fontsize=8.5)
        if crowded:  # slanted, anchored at the tick, so that long names do not run into each other
            for label in box_ax.get_xticklabels():
                label.set(rotation=35, ha="right", rotation_mode="anchor")
        box_ax.set_xlim(-0.6, len(models) - 0.4)

        for ax in (trace_ax, box_ax):
            ax.set_ylim(low, high)
            ax.axhline(chance, color="grey", linestyle=":", linewidth=1)
            ax.grid(axis="y", alpha=0.3)
        hist_ax.set_xlim(low, high)
        hist_ax.axvline(chance, color="grey", linestyle=":", linewidth=1)
        trace_ax.set_title(dataset_label(dataset), fontsize=13, fontweight="bold")
        trace_ax.set_xlabel("evaluation number (order of the optimiser)")
        hist_ax.set_xlabel(ACCURACY_LABEL)
        box_ax.set_xlabel("model")
        if column == 0:
            trace_ax.set_ylabel(ACCURACY_LABEL)
            hist_ax.set_ylabel("fraction of trials")
            box_ax.set_ylabel(ACCURACY_LABEL)

    handles = [Patch(facecolor=model_color(m, models), alpha=0.6, label=model_label(m)) for m in models]
    handles.append(Line2D([], [], color="black", linestyle="-", marker="o", markersize=3,
                          label=f"{ours_label} ({SAMPLER_LABELS.get(sampler, sampler)} sampler)"))
    if has_ref:
        handles.append(Line2D([], [], color="black", linestyle="--",
                              label="2019 study (GP), hatched boxes"))
    if len(cut):
        handles.append(Line2D([], [], color="black", linestyle="", marker="o", markersize=5,
                              markerfacecolor="none",
                              label=f"censored by the time limit ({len(cut)}; partial accuracy, not counted)"))
    if noise_handle is not None:
        noise_handle.set_label("median ±1 SD over refits of one setting (seed noise)")
        handles.append(noise_handle)
    handles.append(Line2D([], [], color="grey", linestyle=":", label="chance (1 / classes)"))
    # one column per model (the models fill the first row), as many as the figure's width holds
    ncol = _legend_columns(figure, [h.get_label() for h in handles], len(models), fontsize=9)
    figure.legend(handles=_row_major(handles, ncol), loc="outside lower center",
                  ncol=ncol, fontsize=9, frameon=False)
    figure.suptitle(_title_for(
        figure,
        "Robustness to hyperparameters: 3-fold cross-validated test accuracy of every "
        f"configuration evaluated ({SAMPLER_LABELS.get(sampler, sampler)} sampler)",
        12), fontsize=12,
    )
    return _save(figure, stem)


# ----------------------------------------------------------------------------- learns curves
def plot_learns_curves(
    trials: pd.DataFrame,
    stem: str | Path,
    *,
    sampler: str = "random",
    reference: pd.DataFrame | None = None,
) -> SavedFigure:
    """Per dataset: fraction of ``sampler`` configurations reaching accuracy >= a, a from chance to 1.

    One curve per model (uniformly random configurations by default, so the
    curve is the fraction of the search space that reaches ``a``); a dotted
    line marks the "learns" threshold (chance + LEARNS_MARGIN). ``reference``
    adds the 2019 study's GP trials as dashed curves (optimiser-guided, so
    biased towards good settings).
    """
    ours = _valid_rows(trials)
    ours = ours[ours["sampler"] == sampler]
    ref = _valid_rows(reference)
    if ours.empty and ref.empty:
        raise ValueError(f"plot_learns_curves: no valid trials of sampler {sampler!r} to draw")
    ours_label = _source_label(ours)
    datasets = _ordered(list(ours["dataset"]) + list(ref["dataset"]), DATASET_ORDER)
    models = _ordered(list(ours["model"]) + list(ref["model"]), MODEL_ORDER)
    figure = _figure(4.6 * len(datasets) + 0.4, 5.4)
    axes = figure.subplots(1, len(datasets), squeeze=False, sharey=True)[0]
    for ax, dataset in zip(axes, datasets):
        both = pd.concat([ours[ours["dataset"] == dataset], ref[ref["dataset"] == dataset]])
        chance = float(both["chance"].median())
        grid = np.linspace(chance, 1.0, 181)
        for frame, dashed in ((ours, False), (ref, True)):
            rows = frame[frame["dataset"] == dataset]
            if rows.empty:
                continue
            curves = learns_curve(rows.assign(sampler="curve", source="curve"), grid)
            for model in models:
                curve = curves[curves["model"] == model]
                if curve.empty:
                    continue
                n = int(curve["n"].iloc[0])
                label = f"{model_label(model)} ({'2019 GP' if dashed else ours_label}, n={n})"
                ax.plot(curve["threshold"], curve["fraction"], color=model_color(model, models),
                        linestyle="--" if dashed else "-", linewidth=1.3 if dashed else 2.0,
                        label=label, drawstyle="steps-post")
        ax.axvline(chance + LEARNS_MARGIN, color="grey", linestyle=":", linewidth=1.2,
                   label=f"'learns' threshold (chance + {LEARNS_MARGIN:.2f})")
        ax.set_xlim(chance, 1.0)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(dataset_label(dataset), fontsize=12, fontweight="bold")
        ax.set_xlabel("accuracy threshold a (CV test accuracy)")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    axes[0].set_ylabel("fraction of configurations with accuracy ≥ a")
    figure.suptitle(_title_for(
        figure,
        "How much of each search space learns? "
        f"({SAMPLER_LABELS.get(sampler, sampler)} configurations; higher = more robust)",
        12), fontsize=12,
    )
    return _save(figure, stem)


# ----------------------------------------------------------------------------- learns by epoch
def plot_learns_by_epoch(trials: pd.DataFrame, stem: str | Path, *, sampler: str = "random") -> SavedFigure:
    """Per dataset: fraction of ``sampler`` configurations that learn after each training epoch.

    One line per model (:func:`bioplaus.analysis.statistics.learning_table`: valid,
    uncensored trials; "learns" = accuracy >= chance + LEARNS_MARGIN) with its
    95% Wilson interval as a band and error bars. With the uniformly random sampler the line
    is the share of the search space that learns after e epochs: a line still
    rising at the last epoch says that more training would make more
    configurations learn. The models' points are set slightly apart around
    each epoch, so that lines at the same fraction (often 0) stay visible.
    Raises ``ValueError`` when no trial has per-epoch accuracies.
    """
    table = learning_table(trials)
    table = table[table["sampler"] == sampler]
    if table.empty:
        raise ValueError(f"plot_learns_by_epoch: no per-epoch accuracies of sampler {sampler!r}")
    datasets = _ordered(table["dataset"], DATASET_ORDER)
    models = _ordered(table["model"], MODEL_ORDER)
    last = int(table["epoch"].max())
    figure = _figure(max(6.5, 4.4 * len(datasets) + 0.4), 4.9)
    axes = figure.subplots(1, len(datasets), squeeze=False, sharey=True)[0]
    # models side by side around each epoch (lines at the same fraction, often 0 or 1, stay apart)
    dodge = min(0.06, 0.5 / max(len(models), 1))
    for ax, dataset in zip(axes, datasets):
        for index, model in enumerate(models):
            rows = table[(table["dataset"] == dataset) & (table["model"] == model)].sort_values("epoch")
            if rows.empty:
                continue
            color = model_color(model, models)
            epochs = rows["epoch"].to_numpy() + (index - (len(models) - 1) / 2) * dodge
            ax.fill_between(epochs, rows["frac_learns_lo"], rows["frac_learns_hi"], color=color,
                            alpha=0.15, linewidth=0)
            frac = rows["frac_learns"].to_numpy()
            below = np.clip(frac - rows["frac_learns_lo"].to_numpy(), 0.0, None)  # rounding at 0 and 1
            above = np.clip(rows["frac_learns_hi"].to_numpy() - frac, 0.0, None)
            ax.errorbar(epochs, frac, yerr=[below, above],
                        fmt="none", ecolor=color, elinewidth=0.9, capsize=2.5)  # visible with one epoch too
            n = int(rows["n"].iloc[-1])
            ax.plot(epochs, rows["frac_learns"], color=color, marker="o", markersize=4, linewidth=2.0,
                    label=f"{model_label(model)} (n={n})")
        ax.set_xlim(0.75 - len(models) * dodge / 2, last + 0.25 + len(models) * dodge / 2)
        ax.set_xticks(np.unique(np.linspace(1, last, min(last, 10)).round().astype(int)))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(dataset_label(dataset), fontsize=12, fontweight="bold")
        ax.set_xlabel("training epochs")
        ax.legend(fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.17), frameon=False)
    axes[0].set_ylabel(f"fraction that learns (≥ chance + {LEARNS_MARGIN:.2f})")
    figure.suptitle(_title_for(
        figure,
        "Would more training help? Fraction of "
        f"{SAMPLER_LABELS.get(sampler, sampler)} configurations that learn after each epoch "
        "(band: 95% Wilson interval)", 12), fontsize=12,
    )
    return _save(figure, stem)


# ----------------------------------------------------------------------------- importance
_EVALUATOR_LABELS = {
    "fanova": "fANOVA (share of accuracy variance)",
    "ped_anova": "PED-ANOVA (reaching the top 10%)",
}


def plot_importance(importance_df: pd.DataFrame, stem: str | Path) -> SavedFigure:
    """Horizontal bars of each hyperparameter's importance, both evaluators, one (dataset, model).

    ``importance_df`` is :func:`bioplaus.analysis.importance` output filtered to one
    (dataset, model); parameters are sorted by mean importance (most important on top).
    With ``lo``/``hi`` columns (bootstrap intervals) each bar gets an error bar;
    with ``n_active``, a parameter active in fewer trials than ``n_trials`` is
    labelled ``name (active in k/n)``; one scored in no evaluator (too few active
    trials) is labelled ``name (active in k/n: not scored)``.
    """
    if importance_df.empty:
        raise ValueError("plot_importance: empty importance table")
    groups = importance_df[["dataset", "model"]].drop_duplicates()
    if len(groups) != 1:
        raise ValueError(
            "plot_importance draws one (dataset, model); got "
            + ", ".join(f"{d}/{m}" for d, m in groups.itertuples(index=False))
        )
    dataset, model = groups.iloc[0]
    table = importance_df.pivot_table(index="param", columns="evaluator", values="importance",
                                      aggfunc="mean", dropna=False)
    table = table.loc[table.mean(axis=1).fillna(-1).sort_values(ascending=True).index]
    has_ci = {"lo", "hi"} <= set(importance_df.columns) and importance_df[["lo", "hi"]].notna().any().any()
    if has_ci:
        low = importance_df.pivot_table(index="param", columns="evaluator", values="lo",
                                        aggfunc="mean", dropna=False).reindex(table.index)
        high = importance_df.pivot_table(index="param", columns="evaluator", values="hi",
                                         aggfunc="mean", dropna=False).reindex(table.index)
    evaluators = [e for e in ("fanova", "ped_anova") if e in table.columns]
    evaluators += [e for e in table.columns if e not in evaluators]
    n_trials = int(importance_df["n_trials"].max()) if "n_trials" in importance_df else None
    labels = list(table.index)
    if "n_active" in importance_df.columns and n_trials:
        counts = importance_df.groupby("param")["n_active"].max()
        labels = []
        for name in table.index:
            count = int(counts.get(name, n_trials))
            scored = table.loc[name].notna().any()
            if count < n_trials or not scored:
                labels.append(f"{name} (active in {count}/{n_trials}" + ("" if scored else ": not scored") + ")")
            else:
                labels.append(name)

    figure = _figure(8.5 if any("active in" in label for label in labels) else 7.5,
                     2.0 + 0.14 * len(table) * max(2, len(evaluators)))
    ax = figure.subplots()
    positions = np.arange(len(table))
    height = 0.8 / len(evaluators)
    color = model_color(model)
    for index, evaluator in enumerate(evaluators):
        offset = ((len(evaluators) - 1) / 2 - index) * height  # first evaluator on top
        style = {"color": color, "alpha": 0.85} if index == 0 else {
            "facecolor": "white", "edgecolor": color, "hatch": "///"}
        values = table[evaluator].fillna(0).to_numpy()
        ax.barh(positions + offset, values, height=height,
                label=_EVALUATOR_LABELS.get(evaluator, evaluator), **style)
        if has_ci and evaluator in low.columns:
            lo = low[evaluator].to_numpy(dtype=float)
            hi = high[evaluator].to_numpy(dtype=float)
            keep = np.isfinite(lo) & np.isfinite(hi)
            error = np.vstack([np.clip(values - lo, 0, None), np.clip(hi - values, 0, None)])
            ax.errorbar(values[keep], (positions + offset)[keep], xerr=error[:, keep], fmt="none",
                        ecolor="black", elinewidth=1.0, capsize=2)
    ax.set_yticks(positions, labels)
    ax.set_ylim(-0.6, len(table) - 0.4)
    ax.set_xlabel("importance (sums to 1 per method)"
                  + ("\nerror bars: bootstrap 95% interval over trials" if has_ci else ""))
    ax.set_ylabel("hyperparameter")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    suffix = f", {n_trials} random configurations" if n_trials else ""
    figure.suptitle(_title_for(figure, f"Which hyperparameters matter? {model_label(model)} on "
                               f"{dataset_label(dataset)}{suffix}", 11), fontsize=11)
    return _save(figure, stem)


# ----------------------------------------------------------------------------- sensitivity
def rank_lowess(x, y, *, frac: float = 0.3, n_points: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed trend of y against x: local linear regression (LOWESS, no robustness
    iterations) on the ranks of x, with tricube weights over the nearest ``frac``
    of the points (ties share their mean rank). Returns (x, trend at x): x the
    distinct values when there are at most ``n_points``, else ``n_points``
    evenly spaced ranks.

    Working on ranks makes the bandwidth adapt to how the values are spread
    (log-uniform draws, clustered optimiser proposals) and keeps single
    extreme values from dragging the line. Both arrays have shape (m,), m <= n_points.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    n = len(xs)
    ranks = rankdata(xs, method="average") - 1.0  # tied values share their mean rank
    unique_x, first = np.unique(xs, return_index=True)
    if len(unique_x) <= n_points:
        where, where_x = ranks[first], unique_x
    else:
        where = np.linspace(0, n - 1, n_points)
        where_x = np.interp(where, ranks, xs)
    half_width = max(frac * n / 2, 2.0)
    distance = np.abs(where[:, None] - ranks[None, :]) / (half_width + 1.0)
    weights = np.clip(1.0 - distance**3, 0.0, None) ** 3  # (m, n) tricube
    total = weights.sum(axis=1)
    mean_r = weights @ ranks / total
    mean_y = weights @ ys / total
    dr = ranks[None, :] - mean_r[:, None]
    slope_den = (weights * dr**2).sum(axis=1)
    slope = np.where(slope_den > 0, (weights * dr * (ys[None, :] - mean_y[:, None])).sum(axis=1)
                     / np.where(slope_den > 0, slope_den, 1.0), 0.0)
    trend = mean_y + slope * (where - mean_r)
    return where_x, trend


def _padded(low: float, high: float, *, log: bool, pad: float = 0.04) -> tuple[float, float]:
    """Axis limits a little wider than [low, high] so points on the bounds stay visible."""
    if log and low > 0:
        span = np.log10(high) - np.log10(low)
        return 10 ** (np.log10(low) - pad * span), 10 ** (np.log10(high) + pad * span)
    span = (high - low) or 1.0
    return low - pad * span, high + pad * span


def _is_discrete(distribution: BaseDistribution) -> bool:
    if isinstance(distribution, CategoricalDistribution):
        return True
    if isinstance(distribution, IntDistribution) and not distribution.log:
        return (distribution.high - distribution.low) // distribution.step + 1 <= _MAX_DISCRETE_BOXES
    return False


def plot_sensitivity(
    trials_random: pd.DataFrame,
    space: Mapping[str, BaseDistribution],
    stem: str | Path,
    *,
    sampler: str = "random",
    ncols: int | None = None,
    inactive: Any = REGISTRY,
) -> SavedFigure:
    """Accuracy against each hyperparameter of one (dataset, model), one panel per parameter.

    Uses the valid trials of ``sampler`` (default ``random``: an unbiased sample
    of the space), and in each panel only the trials where that parameter is
    active (``inactive``: see :mod:`bioplaus.analysis.active`); a panel whose
    parameter is inactive in some trials says so in its corner ("active in k/n"). Continuous and wide integer parameters: scatter of
    (value, accuracy) with a smoothed trend (black line: :func:`rank_lowess`, a
    local linear fit on the ranks of the value; log x-axis for log-scale
    parameters). Booleans, categoricals and integers with at most 8 values: a
    box per value with every trial as a dot.
    Raises ``ValueError`` for several (dataset, model) or no trials.
    """
    frame = _valid_rows(trials_random)
    frame = frame[frame["sampler"] == sampler]
    if frame.empty:
        raise ValueError(f"plot_sensitivity: no valid trials of sampler {sampler!r}")
    groups = frame[["dataset", "model"]].drop_duplicates()
    if len(groups) != 1:
        raise ValueError("plot_sensitivity draws one (dataset, model); got "
                         + ", ".join(f"{d}/{m}" for d, m in groups.itertuples(index=False)))
    dataset, model = groups.iloc[0]
    names = [n for n in space if f"param_{n}" in frame.columns]
    if not names:
        raise ValueError("plot_sensitivity: no param_<name> column matches the search space")
    ncols = ncols or (3 if len(names) <= 9 else 5)
    nrows = int(np.ceil(len(names) / ncols))
    figure = _figure(3.1 * ncols, 2.55 * nrows + 0.9)
    axes = figure.subplots(nrows, ncols, squeeze=False, sharey=True)
    all_accuracy = frame["accuracy"].to_numpy(dtype=float)
    chance = float(frame["chance"].median())
    low, high = _accuracy_limits(all_accuracy, chance)
    color = model_color(model)
    rng = np.random.default_rng(0)
    active = active_matrix(frame, {n: space[n] for n in names}, inactive=inactive)

    for index, name in enumerate(names):
        ax = axes.flat[index]
        distribution = space[name]
        keep_rows = active[name].to_numpy()
        values = frame.loc[keep_rows, f"param_{name}"]
        accuracy = all_accuracy[keep_rows]
        if keep_rows.sum() < len(frame):
            ax.text(0.02, 0.97, f"active in {int(keep_rows.sum())}/{len(frame)}", transform=ax.transAxes,
                    ha="left", va="top", fontsize=7.5,
                    bbox={"facecolor": "white", "edgecolor": "grey", "alpha": 0.8, "pad": 1.5})
        if _is_discrete(distribution):
            if isinstance(distribution, CategoricalDistribution):
                levels = list(distribution.choices)
            else:
                levels = list(range(distribution.low, distribution.high + 1, distribution.step))
            text = values.astype(str).str.strip().str.lower()
            data = [accuracy[(text == str(level).lower()).to_numpy()] for level in levels]
            if not isinstance(distribution, CategoricalDistribution):
                numeric = pd.to_numeric(values, errors="coerce").round().to_numpy()
                data = [accuracy[numeric == level] for level in levels]
            positions = np.arange(len(levels))
            kept = [(p, d) for p, d in zip(positions, data) if len(d)]
            if kept:
                box = ax.boxplot([d for _, d in kept], positions=[p for p, _ in kept],
                                 widths=0.6, patch_artist=True, showfliers=False,
                                 medianprops={"color": "black", "linewidth": 1.5})
                for patch in box["boxes"]:
                    patch.set(facecolor=color, alpha=0.35, edgecolor=color)
                for position, d in kept:
                    ax.scatter(position + rng.uniform(-0.15, 0.15, len(d)), d, s=6,
                               color=color, alpha=0.6, linewidths=0, zorder=3)
            ax.set_xticks(positions, [str(level) for level in levels],
                          fontsize=8 if len(levels) <= 4 else 7)
            ax.set_xlim(-0.6, len(levels) - 0.4)
        else:
            x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
            keep = np.isfinite(x)
            ax.scatter(x[keep], accuracy[keep], s=8, color=color, alpha=0.55, linewidths=0)
            if keep.sum() >= 5:
                xs, smoothed = rank_lowess(x[keep], accuracy[keep])
                ax.plot(xs, smoothed, color="black", linewidth=1.5)
            if getattr(distribution, "log", False):
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            if isinstance(distribution, (FloatDistribution, IntDistribution)):
                ax.set_xlim(*_padded(distribution.low, distribution.high,
                                     log=getattr(distribution, "log", False)))
            ax.tick_params(axis="x", labelsize=7.5)
        scale = " (log scale)" if getattr(distribution, "log", False) else ""
        ax.set_title(f"{name}{scale}", fontsize=9.5)
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1)
        ax.set_ylim(low, high)
        ax.grid(alpha=0.25)
        if index % ncols == 0:
            ax.set_ylabel(ACCURACY_LABEL, fontsize=9)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    figure.suptitle(_title_for(
        figure,
        f"Accuracy against each hyperparameter: {model_label(model)} on {dataset_label(dataset)} "
        f"({len(frame)} {SAMPLER_LABELS.get(sampler, sampler)} configurations, each panel only "
        "those where the parameter is active; black line = smoothed trend (LOWESS on ranks), "
        "dotted = chance)",
        11), fontsize=11,
    )
    return _save(figure, stem)


# ----------------------------------------------------------------------------- trials needed
def plot_expected_max(curves: pd.DataFrame, stem: str | Path, *, dataset: str | None = None,
                      chance: float | None = None, defaults: pd.DataFrame | None = None) -> SavedFigure:
    """Expected best accuracy after k random trials, one curve (with its band) per model, one dataset.

    ``curves``: :func:`bioplaus.analysis.trials_needed.expected_max_curves` rows
    (one dataset, or pick it with ``dataset``). Line: the unbiased estimate
    (Tang et al. 2020); band: the bootstrap interval. ``defaults``
    (:func:`bioplaus.analysis.tunability.tunability` rows) adds each model's
    default accuracy as a dotted horizontal line. Log-scale k axis.
    """
    frame = curves if dataset is None else curves[curves["dataset"] == dataset]
    if frame.empty:
        raise ValueError(f"plot_expected_max: no curves{'' if dataset is None else ' for ' + dataset}")
    datasets = frame["dataset"].unique()
    if len(datasets) != 1:
        raise ValueError("plot_expected_max draws one dataset; got " + ", ".join(map(str, datasets)))
    dataset = datasets[0]
    models = _ordered(frame["model"], MODEL_ORDER)
    figure = _figure(7.0, 5.2)
    ax = figure.subplots()
    for model in models:
        rows = frame[frame["model"] == model].sort_values("k")
        color, style = model_color(model, models), model_linestyle(model, models)
        n = int(rows["n"].iloc[0])
        ax.fill_between(rows["k"], rows["lo"], rows["hi"], color=color, alpha=0.18, linewidth=0)
        ax.plot(rows["k"], rows["expected_max"], color=color, linestyle=style, linewidth=2.0,
                label=f"{model_label(model)} (n={n})")
        if defaults is not None:
            match = defaults[(defaults["dataset"] == dataset) & (defaults["model"] == model)]
            if len(match) and np.isfinite(match["default"].iloc[0]):
                ax.axhline(match["default"].iloc[0], color=color, linestyle=":", linewidth=1.3)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    n_max = int(frame["k"].max())
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if t <= n_max]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("number of uniformly random configurations tried, k (log scale)")
    ax.set_ylabel(f"expected best {ACCURACY_LABEL} after k trials")
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    if defaults is not None:
        handles.append(Line2D([], [], color="black", linestyle=":", label="default setting (refitted mean)"))
    handles.append(Patch(facecolor="grey", alpha=0.3, label="bootstrap 95% band"))
    ncol = _legend_columns(figure, [h.get_label() for h in handles], min(len(models), 4), fontsize=9)
    figure.legend(handles=_row_major(handles, ncol), loc="outside lower center", ncol=ncol,
                  fontsize=9, frameon=False)
    ax.set_title(_title_for(figure, f"How many random trials does each rule need? {dataset_label(dataset)}: "
                            "expected best accuracy after k trials (unbiased estimator)", 11), fontsize=11)
    return _save(figure, stem)


# ----------------------------------------------------------------------------- alignment
#: marker of each sampler's best configuration in the alignment figure (default: no marker)
_SOURCE_MARKERS = {"gp": "o", "tpe": "s", "random": "^"}


def _alignment_source_order(sources) -> list[str]:
    best = [f"best_{s}" for s in SAMPLER_LABELS]
    return _ordered(sources, ["default", *best])


def _alignment_source_style(source: str) -> dict:
    """Line style of a source: the default setting solid, each best configuration dashed with a marker."""
    if source == "default":
        return {"linestyle": "-", "marker": "", "linewidth": 2.0}
    sampler = source.removeprefix("best_")
    return {"linestyle": "--", "marker": _SOURCE_MARKERS.get(sampler, "D"), "markersize": 4, "linewidth": 1.4}


def _alignment_source_label(source: str) -> str:
    if source == "default":
        return "published default setting"
    sampler = source.removeprefix("best_")
    return f"best of the {SAMPLER_LABELS.get(sampler, sampler)} search"


def plot_alignment(alignment: pd.DataFrame, stem: str | Path) -> SavedFigure:
    """Angle between each rule's hidden updates and backprop's gradient, against epoch; one column per dataset.

    ``alignment`` holds rows of ``alignment.csv``
    (:func:`bioplaus.study.alignment.run_alignment`). Top row: the angle in
    degrees, mean over the hidden layers, after each epoch (x: epochs
    completed, fractional where a run stopped inside an epoch); a dotted line
    at 90 degrees (an update orthogonal to the gradient). Bottom row: held-out
    accuracy of the same runs. One colour per model; the published default
    setting solid, each sampler's best configuration dashed with its marker;
    a cross marks the last epoch of a run that diverged or ran out of time.
    Raises ``ValueError`` when no row has an angle.
    """
    frame = alignment.copy()
    frame = frame[pd.to_numeric(frame["epoch"], errors="coerce").notna()]
    frame["angle_deg"] = pd.to_numeric(frame["angle_deg"], errors="coerce")
    if frame.empty or not frame["angle_deg"].notna().any():
        raise ValueError("plot_alignment: no row with an angle to draw")
    for flag in ("diverged", "timed_out"):
        if flag in frame:
            frame[flag] = frame[flag].astype(str).str.lower().isin(["true", "1", "1.0"])
        else:
            frame[flag] = False
    keys = ["dataset", "model", "source", "epochs_completed"]
    curves = (frame.groupby(keys, sort=True)
              .agg(angle=("angle_deg", "mean"), accuracy=("accuracy", "first"), chance=("chance", "first"),
                   stopped=("diverged", "any"), timed_out=("timed_out", "any"))
              .reset_index())
    curves["stopped"] |= curves["timed_out"]

    datasets = _ordered(curves["dataset"], DATASET_ORDER)
    models = _ordered(curves["model"], MODEL_ORDER)
    sources = _alignment_source_order(curves["source"])
    colors = {m: model_color(m, models) for m in models}
    figure = _figure(max(6.5, 4.8 * len(datasets) + 0.6), 8.4)
    axes = figure.subplots(2, len(datasets), squeeze=False, sharex="col")
    top = float(np.nanmax(curves["angle"]))
    any_stopped = False
    for column, dataset in enumerate(datasets):
        angle_ax, acc_ax = axes[:, column]
        rows_d = curves[curves["dataset"] == dataset]
        for model in models:
            for source in sources:
                rows = rows_d[(rows_d["model"] == model) & (rows_d["source"] == source)]
                if rows.empty:
                    continue
                x = rows["epochs_completed"].to_numpy(dtype=float)
                style = {"color": colors[model], **_alignment_source_style(source)}
                angle_ax.plot(x, rows["angle"].to_numpy(dtype=float), **style)
                acc_ax.plot(x, rows["accuracy"].to_numpy(dtype=float), **style)
                if rows["stopped"].iloc[-1]:
                    any_stopped = True
                    for ax, value in ((angle_ax, rows["angle"].iloc[-1]), (acc_ax, rows["accuracy"].iloc[-1])):
                        ax.plot([x[-1]], [value], marker="x", color=colors[model], markersize=9,
                                markeredgewidth=2, linestyle="")
        angle_ax.axhline(90.0, color="grey", linestyle=":", linewidth=1.2)
        angle_ax.set_ylim(0.0, min(180.0, max(100.0, top + 5.0)))
        angle_ax.set_title(dataset_label(dataset), fontsize=13, fontweight="bold")
        chance = float(rows_d["chance"].median()) if rows_d["chance"].notna().any() else 0.0
        acc_ax.set_ylim(*_accuracy_limits(rows_d["accuracy"], chance))
        acc_ax.axhline(chance, color="grey", linestyle=":", linewidth=1)
        acc_ax.set_xlabel("epochs of training (first fold)")
        acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (angle_ax, acc_ax):
            ax.grid(alpha=0.3)
        if column == 0:
            angle_ax.set_ylabel("angle to backprop's gradient (degrees)\nmean over hidden layers")
            acc_ax.set_ylabel("held-out accuracy (first fold)")

    handles = [Line2D([], [], color=colors[m], linewidth=2.5, label=model_label(m)) for m in models]
    handles += [Line2D([], [], color="black", label=_alignment_source_label(s), **_alignment_source_style(s))
                for s in sources]
    handles.append(Line2D([], [], color="grey", linestyle=":",
                          label="dotted: 90° (orthogonal to the gradient); chance accuracy"))
    if any_stopped:
        handles.append(Line2D([], [], color="black", marker="x", linestyle="", markersize=8,
                              markeredgewidth=2, label="diverged or out of time"))
    ncol = _legend_columns(figure, [h.get_label() for h in handles], len(models), fontsize=9)
    figure.legend(handles=_row_major(handles, ncol), loc="outside lower center", ncol=ncol,
                  fontsize=9, frameon=False)
    figure.suptitle(_title_for(
        figure,
        "Do the updates align with backprop? Angle between each rule's hidden-layer weight updates and "
        "the backpropagated gradient on the same mini-batches, per epoch",
        12), fontsize=12)
    return _save(figure, stem)
