"""The robustness subcommands end to end on small generated tables (files written, columns present)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bioplaus.cli import main
from bioplaus.models import get_model

from synthetic_trials import sample_points, trials_frame


def _study(tmp_path, dataset, model, sampler, n, seed):
    rng = np.random.default_rng(seed)
    space = get_model(model).search_space({})
    points = sample_points(n, rng, space)
    accuracy = [0.2 + 0.7 * (np.log10(p["learning_rate"]) + 4) / 2.7 for p in points]
    frame = trials_frame(points, np.asarray(accuracy) + rng.normal(0, 0.01, n), model=model,
                         dataset=dataset, sampler=sampler)
    path = tmp_path / dataset / model / sampler / "trials.csv"
    path.parent.mkdir(parents=True)
    frame.to_csv(path, index=False)
    return path


def test_robustness_commands_write_their_tables_and_figures(tmp_path):
    trials = [_study(tmp_path, d, "mlp", s, 14, i) for i, (d, s) in
              enumerate([("digits", "random"), ("digits", "gp"), ("mnist", "random")])]
    repeats = tmp_path / "digits" / "mlp" / "repeats.csv"
    pd.DataFrame({"dataset": "digits", "model": "mlp", "source": "default", "repeat": [0, 1, 2],
                  "accuracy": [0.5, 0.52, 0.51], "chance": 0.1, "state": "COMPLETE",
                  "invalid": False}).to_csv(repeats, index=False)
    out = tmp_path / "results"
    assert main(["tunability", "--trials", *map(str, trials), "--repeats", str(repeats),
                 "--out", str(out / "tunability.csv"), "--out-params", str(out / "tunability_params.csv")]) == 0
    table = pd.read_csv(out / "tunability.csv")
    assert set(table["dataset"]) == {"digits", "mnist"}
    assert table.set_index("dataset").loc["digits", "default"] == 0.51
    shares = pd.read_csv(out / "tunability_params.csv")
    assert {"share", "n_active"} <= set(shares.columns)
    digits = shares[shares["dataset"] == "digits"].set_index("param")
    assert digits["share"].idxmax() == "learning_rate"

    figs = [str(out / "figures" / f"expected_max_{d}") for d in ("digits", "mnist")]
    assert main(["trials-needed", "--trials", *map(str, trials), "--repeats", str(repeats), "--n-boot", "50",
                 "--out", str(out / "trials_needed.csv"), "--figures", *figs]) == 0
    assert len(pd.read_csv(out / "trials_needed.csv")) == 28
    assert all((out / "figures" / f"expected_max_{d}.png").is_file() for d in ("digits", "mnist"))

    assert main(["aggregates", "--trials", *map(str, trials), "--n-boot", "50",
                 "--out-iqm", str(out / "iqm.csv"), "--out-improvement", str(out / "improvement.csv")]) == 0
    assert set(pd.read_csv(out / "iqm.csv")["dataset"]) == {"all", "digits", "mnist"}

    assert main(["importance", "--trials", str(trials[0]), "--model", "mlp", "--n-boot", "3",
                 "--out-interactions", str(out / "interactions.csv"), "--out-csv", str(out / "imp.csv"),
                 "--out-figure", str(out / "figures" / "imp")]) == 0
    importance = pd.read_csv(out / "imp.csv")
    scored = importance[(importance["n_active"] >= 8) & (importance["evaluator"] == "fanova")]
    assert len(scored) and scored[["importance", "lo", "hi"]].notna().all().all()
    widths = importance[importance["param"] == "h_l_6"]
    assert (widths["n_active"] < 14).all()  # h_l_6 is active only with six layers
    assert importance.loc[importance["evaluator"] == "ped_anova", "importance"].isna().all()  # < 20 trials
    assert {"param_1", "param_2", "fraction"} <= set(pd.read_csv(out / "interactions.csv").columns)

    assert main(["transfer-table", "--rows", "--out", str(out / "transfer.csv")]) == 0
    assert pd.read_csv(out / "transfer.csv").empty
