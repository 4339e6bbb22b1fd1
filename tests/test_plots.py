"""Figures: files written (PNG + PDF), and the axes carry the labels a reader needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from bioplaus.analysis import figures
from bioplaus.analysis.figures import (
    MODEL_COLORS,
    plot_importance,
    plot_learns_by_epoch,
    plot_learns_curves,
    plot_robustness,
    plot_sensitivity,
    rank_lowess,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _synthetic_trials(n=12, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    levels = {"mlp": 0.9, "cnn": 0.95, "segdend": 0.6}
    for dataset in ("mnist", "cifar10"):
        for model, level in levels.items():
            for sampler in ("gp", "random"):
                for number in range(n):
                    accuracy = float(np.clip(level + rng.normal(0, 0.08), 0.09, 1.0))
                    rows.append({
                        "dataset": dataset, "model": model, "sampler": sampler,
                        "number": number, "state": "COMPLETE", "accuracy": accuracy,
                        "value": accuracy, "invalid": False, "diverged": False,
                        "censored": False, "chance": 0.1, "n_classes": 10,
                        "accuracy_epoch_1": max(0.1, accuracy - 0.2), "accuracy_epoch_2": accuracy,
                    })
    trials = pd.DataFrame(rows)
    trials.loc[3, ["invalid", "accuracy"]] = [True, np.nan]  # excluded from the figure
    return trials


def _check_files(saved):
    png, pdf = saved
    assert png.suffix == ".png" and pdf.suffix == ".pdf"
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:4] == b"%PDF"


def _legend_texts(figure):
    texts = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    for ax in figure.axes:
        if ax.get_legend() is not None:
            texts += [t.get_text() for t in ax.get_legend().get_texts()]
    return texts


def test_robustness_layout_labels_and_files(tmp_path):
    saved = plot_robustness(_synthetic_trials(), tmp_path / "sub" / "robustness")
    _check_files(saved)
    figure = saved.figure
    axes = np.array(figure.axes).reshape(3, 2)
    assert [ax.get_title() for ax in axes[0]] == ["MNIST", "CIFAR-10"]
    assert axes[0, 0].get_ylabel() == "CV test accuracy"
    assert axes[1, 0].get_ylabel() == "fraction of trials"
    assert axes[0, 0].get_xlabel().startswith("evaluation number")
    assert "Gaussian-process" in figure.get_suptitle()
    for ax in (axes[0, 0], axes[2, 1]):
        low, high = ax.get_ylim()
        assert low <= 0.1 and high >= 1.0  # chance to 1
    ticks = [t.get_text().replace("-\n", "-").replace("\n", " ")
             for t in axes[2, 0].get_xticklabels()]
    assert ticks == ["Backprop MLP", "Backprop CNN", "Segregated-dendrite MLP"]
    legend = _legend_texts(figure)
    assert {"Backprop MLP", "Backprop CNN", "Segregated-dendrite MLP"} <= set(legend)
    # one line per model in row 1, in the model's colour
    colours = {to_hex(line.get_color()) for line in axes[0, 0].get_lines() if line.get_marker() == "o"}
    assert colours == {c.lower() for c in MODEL_COLORS.values()}


def test_censored_trials_are_hollow_in_the_trace_and_absent_elsewhere(tmp_path):
    trials = _synthetic_trials()
    gp_mnist_segdend = trials.index[(trials["sampler"] == "gp") & (trials["dataset"] == "mnist")
                                    & (trials["model"] == "segdend")]
    cut = list(gp_mnist_segdend[:2])
    trials.loc[cut, ["censored", "accuracy"]] = [True, 0.05]  # partial accuracy below everything
    figure = plot_robustness(trials, tmp_path / "rob").figure
    axes = np.array(figure.axes).reshape(3, 2)
    hollow = [c for c in axes[0, 0].collections if len(c.get_offsets())
              and (c.get_facecolors().size == 0 or c.get_facecolors()[0][3] == 0)]
    assert len(hollow) == 1 and sorted(hollow[0].get_offsets()[:, 0]) == sorted(trials.loc[cut, "number"])
    assert to_hex(hollow[0].get_edgecolors()[0]) == MODEL_COLORS["segdend"].lower()
    assert any("censored" in text and "(2;" in text for text in _legend_texts(figure))
    # the valid trials' line and the box plots do not hold them
    line = next(l for l in axes[0, 0].get_lines()
                if l.get_marker() == "o" and to_hex(l.get_color()) == MODEL_COLORS["segdend"].lower())
    assert 0.05 not in set(np.round(line.get_ydata(), 6)) and len(line.get_ydata()) == 12 - 2
    dots = [c for c in axes[2, 0].collections if len(c.get_offsets())]
    assert all(0.05 not in set(np.round(c.get_offsets()[:, 1], 6)) for c in dots)


def test_learns_by_epoch(tmp_path):
    trials = _synthetic_trials()
    trials.loc[trials["model"] == "segdend", "accuracy_epoch_1"] = 0.1  # nothing learns after epoch 1
    saved = plot_learns_by_epoch(trials, tmp_path / "learns_by_epoch")
    _check_files(saved)
    axes = saved.figure.axes
    assert [ax.get_title() for ax in axes] == ["MNIST", "CIFAR-10"]
    assert axes[0].get_xlabel() == "training epochs" and "learns" in axes[0].get_ylabel()
    lines = {l.get_label().split(" (")[0]: l for l in axes[0].get_lines() if not l.get_label().startswith("_")}
    assert set(lines) == {"Backprop MLP", "Backprop CNN", "Segregated-dendrite MLP"}
    segdend = lines["Segregated-dendrite MLP"]
    assert list(np.round(segdend.get_xdata())) == [1, 2]
    assert segdend.get_ydata()[0] == 0.0 and segdend.get_ydata()[1] > 0.9
    # models are set apart around each epoch, so that lines at the same fraction do not hide each other
    firsts = sorted(l.get_xdata()[0] for l in lines.values())
    assert len(set(firsts)) == 3 and max(firsts) - min(firsts) < 0.5
    assert to_hex(segdend.get_color()) == MODEL_COLORS["segdend"].lower()
    assert segdend.get_label().endswith("(n=12)")
    from matplotlib.collections import PolyCollection

    assert sum(isinstance(c, PolyCollection) for c in axes[0].collections) == 3  # one Wilson band per model
    with pytest.raises(ValueError, match="per-epoch"):
        plot_learns_by_epoch(trials.drop(columns=["accuracy_epoch_1", "accuracy_epoch_2"]), tmp_path / "x")


def test_robustness_with_reference_and_repeats(tmp_path):
    trials = _synthetic_trials()
    reference = _synthetic_trials(seed=1).assign(source="2019")
    reference = reference[reference["sampler"] == "gp"]
    repeats = pd.DataFrame({
        "dataset": "mnist", "model": "segdend", "source": ["default"] * 3,
        "repeat": [0, 1, 2], "accuracy": [0.5, 0.6, 0.7], "chance": 0.1,
    })
    saved = plot_robustness(trials, tmp_path / "rob", sampler="random",
                            reference=reference, repeats=repeats)
    _check_files(saved)
    legend = " ".join(_legend_texts(saved.figure))
    assert "2019 study" in legend and "seed noise" in legend and "uniformly random" in legend
    box_mnist = np.array(saved.figure.axes).reshape(3, 2)[2, 0]  # row 3, column MNIST
    # the seed-noise error bar: +-0.1 (sd of 0.5, 0.6, 0.7) around the segdend median
    bars = [c for c in box_mnist.containers if c.__class__.__name__ == "ErrorbarContainer"]
    assert len(bars) == 1
    segments = bars[0].lines[2][0].get_segments()[0]
    assert segments[1][1] - segments[0][1] == pytest.approx(0.2)
    # 2019 trials drawn dashed in row 1
    assert any(line.get_linestyle() == "--" for line in saved.figure.axes[0].get_lines())


def _many_models(models, datasets, n=6):
    rng = np.random.default_rng(0)
    return pd.DataFrame([
        {"dataset": dataset, "model": model, "sampler": "gp", "number": number,
         "state": "COMPLETE", "accuracy": float(rng.uniform(0.1, 1.0)), "chance": 0.1}
        for dataset in datasets for model in models for number in range(n)
    ])


@pytest.mark.parametrize("n_datasets", [1, 3])
def test_robustness_legend_columns_follow_the_models(tmp_path, n_datasets):
    models = ["mlp", "cnn", "segdend", "feedback-alignment", "rule4"]  # the figure's order
    datasets = ["mnist", "fashion", "cifar10"][:n_datasets]
    figure = plot_robustness(_many_models(models, datasets), tmp_path / "many").figure
    legend = figure.legends[0]
    renderer = figure.canvas.get_renderer()
    # several columns, all models where the width holds them, never wider than the figure
    assert legend._ncols == (5 if n_datasets == 3 else 3)
    assert legend.get_window_extent(renderer).width <= figure.bbox.width
    # the models come first, row by row: the top row holds the first ncol models
    texts = {t.get_text(): t.get_window_extent(renderer) for t in legend.get_texts()}
    labels = [figures.model_label(m) for m in models]
    top = [texts[label] for label in labels[: legend._ncols]]
    assert max(b.y0 for b in top) - min(b.y0 for b in top) < 1.0
    below = [b for label, b in texts.items() if label not in labels[: legend._ncols]]
    assert below and all(b.y0 < top[0].y0 - 1.0 for b in below)
    assert [b.x0 for b in top] == sorted(b.x0 for b in top)


def test_robustness_legend_with_seven_models_fits_the_figure(tmp_path):
    models = ["mlp", "cnn", "segdend"] + [f"rule{i}" for i in range(4)]
    for datasets in (["mnist"], ["mnist", "cifar10"]):
        trials = _many_models(models, datasets)
        repeats = trials.assign(source="default", repeat=trials["number"])
        figure = plot_robustness(trials, tmp_path / "seven", repeats=repeats,
                                 reference=trials.assign(source="2019")).figure
        legend = figure.legends[0]
        assert legend.get_window_extent(figure.canvas.get_renderer()).width <= figure.bbox.width
        assert len(legend.get_texts()) == 7 + 4  # models, ours, 2019, seed noise, chance


def test_box_plot_labels_of_seven_real_models_do_not_overlap(tmp_path):
    from bioplaus.models.registry import available_models

    models = available_models()
    assert len(models) >= 7
    for datasets in (["mnist"], ["mnist", "cifar10"]):
        figure = plot_robustness(_many_models(models, datasets), tmp_path / "labels", sampler="gp").figure
        renderer = figure.canvas.get_renderer()
        for ax in figure.axes[2 * len(datasets):]:  # the box-plot row
            labels = [t for t in ax.get_xticklabels() if t.get_text()]
            assert len(labels) == len(models)
            angle = np.deg2rad(labels[0].get_rotation())
            if angle == 0:  # level labels: their boxes must not overlap
                boxes = [t.get_window_extent(renderer) for t in labels]
                assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))
            else:  # parallel slanted lines of text: their distance must exceed a line's height
                x = ax.transData.transform(np.c_[ax.get_xticks(), np.zeros(len(labels))])[:, 0]
                height = labels[0].get_fontsize() * figure.dpi / 72
                assert np.diff(x).min() * np.sin(angle) > height
                # and the slanted labels stay inside the figure
                assert all(t.get_window_extent(renderer).x0 >= 0 for t in labels)


def test_robustness_refuses_empty_selection(tmp_path):
    with pytest.raises(ValueError, match="sampler 'tpe'"):
        plot_robustness(_synthetic_trials(), tmp_path / "x", sampler="tpe")


def test_learns_curves(tmp_path):
    saved = plot_learns_curves(_synthetic_trials(), tmp_path / "learns")
    _check_files(saved)
    axes = saved.figure.axes
    assert [ax.get_title() for ax in axes] == ["MNIST", "CIFAR-10"]
    assert axes[0].get_xlim() == pytest.approx((0.1, 1.0))
    assert "≥ a" in axes[0].get_ylabel()
    curves = [line for line in axes[0].get_lines() if line.get_linestyle() == "-"]
    assert len(curves) == 3
    segdend = next(l for l in curves if l.get_label().startswith("Segregated-dendrite MLP"))
    assert to_hex(segdend.get_color()) == MODEL_COLORS["segdend"].lower()
    # a non-increasing curve that starts at 1 (every valid trial beats chance here)
    y = segdend.get_ydata()
    assert y[0] == 1.0 and np.all(np.diff(y) <= 0)


def _importance_table():
    return pd.DataFrame({
        "dataset": "mnist", "model": "mlp",
        "param": ["learning_rate", "batch_size", "learning_rate", "batch_size"],
        "evaluator": ["fanova", "fanova", "ped_anova", "ped_anova"],
        "importance": [0.9, 0.1, 0.7, 0.3], "n_trials": 40,
    })


def test_importance_bars(tmp_path):
    saved = plot_importance(_importance_table(), tmp_path / "imp")
    _check_files(saved)
    ax = saved.figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["batch_size", "learning_rate"]
    assert "importance" in ax.get_xlabel()
    title = saved.figure.get_suptitle()  # over the whole figure, so long parameter labels do not cut it
    assert "Backprop MLP" in title and "MNIST" in title
    widths = sorted(round(p.get_width(), 3) for p in ax.patches)
    assert widths == [0.1, 0.3, 0.7, 0.9]
    two_groups = pd.concat([_importance_table(), _importance_table().assign(model="cnn")])
    with pytest.raises(ValueError, match="one \\(dataset, model\\)"):
        plot_importance(two_groups, tmp_path / "bad")


def test_sensitivity_grid(tmp_path):
    rng = np.random.default_rng(0)
    n = 30
    trials = pd.DataFrame({
        "dataset": "fashion", "model": "segdend", "sampler": "random", "state": "COMPLETE",
        "number": np.arange(n), "invalid": False, "chance": 0.1,
        "accuracy": rng.uniform(0.1, 0.9, n),
        "param_f_etas": np.exp(rng.uniform(np.log(0.01), np.log(0.5), n)),
        "param_h_l_1": rng.integers(30, 501, n),
        "param_num_layers": rng.integers(1, 7, n),
        "param_use_conductances": np.where(rng.random(n) < 0.5, "True", "False"),
    })
    space = {
        "f_etas": FloatDistribution(0.01, 0.5, log=True),
        "h_l_1": IntDistribution(30, 500),
        "num_layers": IntDistribution(1, 6),
        "use_conductances": CategoricalDistribution([False, True]),
    }
    saved = plot_sensitivity(trials, space, tmp_path / "sens", inactive=None)  # a partial space
    _check_files(saved)
    visible = [ax for ax in saved.figure.axes if ax.get_visible()]
    assert len(visible) == 4
    by_title = {ax.get_title(): ax for ax in visible}
    assert by_title["f_etas (log scale)"].get_xscale() == "log"
    assert by_title["h_l_1"].get_xscale() == "linear"
    assert [t.get_text() for t in by_title["use_conductances"].get_xticklabels()] == ["False", "True"]
    assert [t.get_text() for t in by_title["num_layers"].get_xticklabels()] == list("123456")
    assert visible[0].get_ylabel() == "CV test accuracy"
    assert "Segregated-dendrite MLP" in saved.figure.get_suptitle()
    with pytest.raises(ValueError, match="sampler 'random'"):
        plot_sensitivity(trials.assign(sampler="gp"), space, tmp_path / "none", inactive=None)


def test_rank_lowess_recovers_monotone_trend():
    rng = np.random.default_rng(0)
    x = np.exp(rng.uniform(-5, 0, 200))
    y = np.log(x) / 5 + 1 + rng.normal(0, 0.02, 200)  # rises from 0 to 1 with log x
    xs, trend = rank_lowess(x, y)
    assert np.all(np.diff(xs) >= 0)
    assert np.corrcoef(np.log(xs), trend)[0, 1] > 0.99
    # ties share one point: 3 distinct values give 3 trend points
    xs, trend = rank_lowess(np.repeat([1.0, 2.0, 3.0], 5), np.repeat([0.1, 0.5, 0.9], 5))
    assert xs.tolist() == [1.0, 2.0, 3.0]
    assert trend[0] < trend[1] < trend[2]


@pytest.mark.skipif(not (SHARED / "reference").is_dir(), reason="../shared not available")
def test_robustness_from_reference_logs(tmp_path):
    from bioplaus.analysis.reference import load_reference_logs

    saved = plot_robustness(load_reference_logs(SHARED / "reference"), tmp_path / "ref")
    _check_files(saved)
    titles = [ax.get_title() for ax in saved.figure.axes[:3]]
    assert titles == ["MNIST", "Fashion-MNIST", "CIFAR-10"]
    assert "2019 study" in " ".join(_legend_texts(saved.figure))


def test_model_labels_and_colours_are_fixed():
    from bioplaus.models import get_model

    for model in ("mlp", "cnn", "segdend"):
        assert figures.model_label(model) == get_model(model).label
    assert figures.model_label("segdend") == "Segregated-dendrite MLP"
    assert figures.model_label("cnn") == "Backprop CNN"
    assert figures.model_label("comp_dnn") == "comp_dnn"  # unknown to the registry: its name
    assert figures.model_color("newmodel") == figures.model_color("newmodel")
    assert figures.model_color("newmodel") not in MODEL_COLORS.values()


def test_labels_come_from_the_registries(tmp_path, monkeypatch):
    import dataclasses

    from bioplaus.data import DATASETS
    from bioplaus.models import get_model, registry

    spec = dataclasses.replace(get_model("mlp"), name="hebbian", label="Hebbian network")
    monkeypatch.setitem(registry._REGISTERED, "hebbian", spec)
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], label="MNIST digits"))
    assert figures.model_label("hebbian") == "Hebbian network"
    assert figures.dataset_label("mnist") == "MNIST digits"
    assert figures.dataset_label("svhn") == "svhn"  # unknown to the registry: its name
    trials = _many_models(["mlp", "hebbian"], ["mnist", "svhn"])
    figure = plot_robustness(trials, tmp_path / "labels").figure
    axes = np.array(figure.axes).reshape(3, 2)
    assert [ax.get_title() for ax in axes[0]] == ["MNIST digits", "svhn"]
    assert "Hebbian network" in _legend_texts(figure)
