"""The cost model: work counts follow the architecture, invalid points cost nothing, predictions scale and schedule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest

from bioplaus.cli import main
from bioplaus.config import validate_config
from bioplaus.errors import ConfigError, InvalidConfigurationError
from bioplaus.models import get_model
from bioplaus.models.cnn.estimator import check_params
from bioplaus.study import cost
from bioplaus.study.samplers import make_sampler, suggest_all

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
MNIST = dict(input_shape=(1, 28, 28), n_classes=10)


def work(model, params, **kw):
    return cost.point_work(model, params, **MNIST, **kw)


def with_(model, **changes):
    return {**get_model(model).default_params, **changes}


# --------------------------------------------------------------------------- draws


def test_draws_are_the_random_studys_own():
    """Draw d is what a random-sampler study of the same seed suggests as its d-th trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_model("segdend").search_space({})
    study = optuna.create_study(sampler=make_sampler("random", space, 7), direction="maximize")
    asked = []
    for _ in range(4):
        trial = study.ask()
        asked.append(suggest_all(trial, space))
        study.tell(trial, 0.5)
    assert [p for _, p in cost.draw_points("segdend", 7, 4)] == asked
    assert [p for _, p in cost.draw_points("segdend", 8, 4)] != asked


# --------------------------------------------------------------------------- work counts


@pytest.mark.parametrize("model", ["mlp", "fa", "dfa", "sign", "burstprop", "segdend"])
def test_dense_work_grows_with_width_and_depth(model):
    base = with_(model, num_layers=2, h_l_1=100, h_l_2=100, use_conductances=True)
    wider = {**base, "h_l_2": 300}
    deeper = {**base, "num_layers": 3, "h_l_3": 100}
    w0, w1, w2 = work(model, base), work(model, wider), work(model, deeper)
    for phase in ("train", "test"):
        u0, u1, u2 = (getattr(w, phase).units for w in (w0, w1, w2))
        assert u1 > u0 and u2 > u0, (phase, u0, u1, u2)
        assert getattr(w1, phase).bytes > getattr(w0, phase).bytes
    # the unused widths of layers beyond num_layers change nothing
    assert work(model, {**base, "h_l_5": 499}) == w0


def test_cnn_work_grows_with_channels_kernels_and_blocks():
    base = with_("cnn", num_layers=2, ch_1=16, ch_2=16, k_1=3, k_2=3, stride=1, padding=1)
    w0 = work("cnn", base)
    for change in ({"ch_2": 48}, {"ch_1": 32}, {"k_1": 7}, {"num_layers": 3, "ch_3": 16, "k_3": 3}):
        w1 = work("cnn", {**base, **change})
        assert w1.train.units > w0.train.units and w1.test.units > w0.test.units, change
    # stride 2 shrinks every feature map: less work
    assert work("cnn", {**base, "stride": 2}).train.units < w0.train.units


def test_segdend_work_grows_with_the_steps_that_are_simulated():
    cond = with_("segdend", use_conductances=True, l_f_phase=10, l_t_phase=10, l_f_phase_test=60,
                 num_layers=2, h_l_2=300)
    w0 = work("segdend", cond)
    assert work("segdend", {**cond, "l_f_phase": 40}).train.units > w0.train.units
    assert work("segdend", {**cond, "l_t_phase": 40}).train.units > w0.train.units
    assert work("segdend", {**cond, "l_f_phase_test": 90}).test.units > w0.test.units
    # spiking: one uniform per spiking neuron and step, so random numbers grow with the phases
    spk = {**cond, "use_spiking_feedforward": True}
    r0, r1 = work("segdend", spk).train.randoms, work("segdend", {**spk, "l_f_phase": 40}).train.randoms
    assert 0 < r0 < r1
    assert work("segdend", cond).train.randoms == 0
    # rate mode without conductances settles in a few steps and fast-forwards: phase length hardly matters
    rate = {**cond, "use_conductances": False}
    short, long = work("segdend", rate).train.units, work("segdend", {**rate, "l_f_phase": 50}).train.units
    assert long == pytest.approx(short, rel=0.01)
    # with conductances every step moves every layer above the input (whose drive is fixed)
    assert work("segdend", cond).train.units > 3 * short


def test_larger_batches_share_the_weight_traffic():
    small, large = work("mlp", with_("mlp", batch_size=10)), work("mlp", with_("mlp", batch_size=400))
    assert large.train.bytes < small.train.bytes
    assert large.train.flops < small.train.flops  # the per-batch update is shared too
    # the rows of a call cap the batch
    assert work("mlp", with_("mlp", batch_size=400), train_rows=50).train_batch == 50


def test_invalid_points_raise_and_valid_points_skip_them():
    bad = with_("cnn", num_layers=5, **{f"k_{i}": 10 for i in range(1, 6)}, stride=3, padding=1)
    with pytest.raises(InvalidConfigurationError):
        work("cnn", bad)
    # on 8x8 digits most CNN draws do not fit: the valid ones are exactly those that pass the geometry check
    points, draws = cost.valid_points("cnn", 1, 5, input_shape=(1, 8, 8), n_classes=10)
    assert len(points) == 5 and draws > 5
    valid_draws = []
    for d, params in cost.draw_points("cnn", 1, draws):
        try:
            check_params(params, (1, 8, 8))
            valid_draws.append(d)
        except InvalidConfigurationError:
            pass
    assert [d for d, _, _ in points] == valid_draws


def test_roofline_adds_the_three_times():
    rates = {"memory_bytes_per_s": 1e9, "gemm_flops_per_s": 2e9, "randoms_per_s": 1e8}
    assert cost.roofline_seconds(cost.Work(flops=4e9, bytes=1e9, randoms=3e8), rates) == pytest.approx(6.0)


def test_machine_rates_are_positive():
    rates = cost.machine_rates(copy_mb=1, gemm_n=64, n_randoms=10_000, repeats=1)
    assert set(rates) == {"memory_bytes_per_s", "gemm_flops_per_s", "randoms_per_s"}
    assert all(math.isfinite(v) and v > 0 for v in rates.values())


# --------------------------------------------------------------------------- calibration


def test_fit_recovers_a_linear_cost_and_its_spread():
    units = np.array([1e5, 3e5, 1e6, 3e6, 1e7])
    fit = cost.Fit.from_points(units, 2e-9 * units + 1e-5)
    assert fit.per_unit == pytest.approx(2e-9, rel=1e-6) and fit.per_example == pytest.approx(1e-5, rel=1e-5)
    assert fit.log_sd == pytest.approx(0.0, abs=1e-9)
    noisy = cost.Fit.from_points(units, 2e-9 * units * np.array([1.3, 0.8, 1.2, 0.75, 1.1]))
    assert noisy.log_sd > 0.1
    one = cost.Fit.from_points([1e6], [2e-3])
    assert one.per_unit == pytest.approx(2e-9) and one.log_sd == 0.0


def test_calibrate_times_real_points(tmp_path):
    from bioplaus.data import load_dataset

    X, y = load_dataset("digits", max_samples=120, seed=0)
    X = X.reshape(len(X), -1)
    cal = cost.calibrate(["mlp"], X, y, input_shape=(1, 8, 8), rows=40, points=3, seed=0)
    mc = cal.get("mlp")
    assert len(mc.points) == 3 and mc.points[0]["draw"] == "default"
    assert mc.train.per_unit > 0 or mc.train.per_example > 0
    for p in mc.points:  # the fit is in the range of what was measured
        assert 0.2 < float(mc.train.seconds(p["train_units"])) / p["train_s"] < 5
    again = cost.Calibration.from_dict(json.loads(json.dumps(cal.to_dict(), default=str)))
    assert again.get("mlp").train == mc.train
    with pytest.raises(ConfigError, match="not calibrated"):
        cal.get("cnn")


# --------------------------------------------------------------------------- prediction


def calibration(*models, log_sd=0.2):
    fit = cost.Fit(per_unit=2e-9, per_example=1e-5, log_sd=log_sd, n=6)
    return cost.Calibration({m: cost.ModelCalibration(m, fit, fit) for m in models}, rows=300)


def config(**changes):
    cfg = {"datasets": {"digits": {"max_samples": 600}}, "models": ["mlp"], "samplers": ["tpe"],
           "n_trials": 20, "epochs": 2, "repeats": 0, "threads": 1, **changes}
    return validate_config(cfg, SCHEMA)


def test_prediction_is_linear_in_trials_and_epochs():
    cal = calibration("mlp")
    base = cost.predict_study(config(), 4, cal, repetitions=100, seed=3)
    trials = cost.predict_study(config(n_trials=40), 4, cal, repetitions=100, seed=3)
    epochs = cost.predict_study(config(epochs=4), 4, cal, repetitions=100, seed=3)
    assert trials.expected_cpu == pytest.approx(2 * base.expected_cpu, rel=1e-9)
    assert epochs.expected_cpu == pytest.approx(2 * base.expected_cpu, rel=1e-9)
    assert epochs.total_cpu[1] == pytest.approx(2 * base.total_cpu[1], rel=1e-9)  # same draws, twice the epochs
    assert trials.total_cpu[1] == pytest.approx(2 * base.total_cpu[1], rel=0.1)
    lo, mid, hi = base.total_cpu
    assert lo < mid < hi


def test_repeats_alignment_and_transfer_add_their_jobs():
    cal = calibration("mlp", "fa")
    one = cost.predict_study(config(models=["mlp", "fa"]), 4, cal, repetitions=20)
    more = cost.predict_study(config(models=["mlp", "fa"], repeats=2), 4, cal, repetitions=20)
    two_sets = cost.predict_study(config(models=["mlp", "fa"], repeats=2,
                                         datasets={"digits": {"max_samples": 600}, "mnist-5k": {"max_samples": 600}}),
                                  4, cal, repetitions=20)
    # fa records alignment (a job even without repeats); mlp does not
    assert one.n_jobs == 2 + 1
    assert more.n_jobs == 2 + 2 + 1
    assert two_sets.n_jobs == 2 * (2 + 2 + 1 + 2)  # per dataset: studies, repeats, alignment, transfer
    assert more.expected_cpu > one.expected_cpu


def test_invalid_draws_cost_nothing_and_do_not_count():
    """A random CNN study on 8x8 digits: most draws are invalid; the cost is that of its first valid ones."""
    cal = calibration("cnn", log_sd=0.0)
    cfg = config(models=["cnn"], samplers=["random"], n_trials=6, epochs=1)
    pred = cost.predict_study(cfg, 2, cal, repetitions=3)
    assert pred.valid_fraction["digits/cnn"] < 0.5
    points, _ = cost.valid_points("cnn", cfg["seed"], 6, input_shape=(1, 8, 8), n_classes=10)
    fit = cal.get("cnn").train
    by_hand = sum(cost.evaluation_cpu_seconds(float(fit.seconds(w.train.units)), float(fit.seconds(w.test.units)),
                                              600, 3, 1) for _, _, w in points)
    assert pred.expected_cpu == pytest.approx(by_hand, rel=1e-6)


def test_schedule_respects_cores_threads_and_order():
    J = cost.Job
    jobs = [J("long", 1, 10, 10, "m"), J("a", 1, 1, 1, "m"), J("b", 1, 1, 1, "m"), J("c", 1, 1, 1, "m")]
    assert cost.schedule_wall(jobs, 1) == pytest.approx(13)
    assert cost.schedule_wall(jobs, 2) == pytest.approx(10)      # the longest job bounds it
    assert cost.schedule_wall([J(str(i), 1, 5, 5, "m") for i in range(4)], 2) == pytest.approx(10)
    wide = [J("w1", 2, 3, 6, "m"), J("w2", 2, 3, 6, "m")]
    assert cost.schedule_wall(wide, 2) == pytest.approx(6)       # two-thread jobs on two cores run one at a time
    assert cost.schedule_wall(wide, 4) == pytest.approx(3)
    chain = [J("first", 1, 2, 2, "m"), J("then", 1, 3, 3, "m", ("first",))]
    assert cost.schedule_wall(chain, 8) == pytest.approx(5)


def test_predicted_wall_respects_cores_and_the_longest_job():
    cal = calibration("mlp", "fa")
    cfg = config(models=["mlp", "fa"], samplers=["tpe", "random"], repeats=1)
    one = cost.predict_study(cfg, 1, cal, repetitions=30, seed=1)
    many = cost.predict_study(cfg, 64, cal, repetitions=30, seed=1)
    # one thread per job, folds one after another: on one core the wall time is the CPU time
    assert one.samples["wall"] == pytest.approx(one.samples["total_cpu"], rel=1e-9)
    assert many.wall[1] < one.wall[1]
    for pred in (one, many):
        for wall, total in zip(pred.samples["wall"], pred.samples["total_cpu"]):
            assert wall >= total / pred.cores * (1 - 1e-9)
        assert pred.wall[1] >= pred.longest_job[1] * (1 - 1e-9)
    # with more cores than jobs, the longest job (and what waits for it) is the wall time
    assert many.wall[1] == pytest.approx(many.wall_bound, rel=0.5)


def test_threads_run_folds_in_parallel():
    cal = calibration("mlp", log_sd=0.0)
    serial = cost.predict_study(config(threads=1), 8, cal, repetitions=5, seed=2)
    parallel = cost.predict_study(config(threads=3), 8, cal, repetitions=5, seed=2)
    assert parallel.total_cpu[1] == pytest.approx(serial.total_cpu[1], rel=1e-9)
    assert parallel.longest_job[1] == pytest.approx(serial.longest_job[1] / 3, rel=1e-9)


# --------------------------------------------------------------------------- CLI


TINY = """\
datasets:
  digits: {max_samples: 200}
models: [mlp, fa]
samplers: [random]
n_trials: 2
n_folds: 3
epochs: 1
threads: 1
repeats: 1
"""


def test_estimate_command_prints_the_prediction(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    out_json = tmp_path / "estimate.json"
    code = main(["estimate", "--configfile", str(path), "--cores", "2", "--calibration-examples", "30",
                 "--calibration-points", "2", "--repetitions", "20", "--json", str(out_json),
                 "--save-calibration", str(tmp_path / "cal.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    for field in ("mlp", "fa", "total", "p10-p90", "wall time on 2 cores", "longest job", "valid draws"):
        assert field in out, field
    assert "CPU-" in out
    record = json.loads(out_json.read_text())
    assert record["prediction"]["cores"] == 2 and set(record["calibration"]["models"]) == {"mlp", "fa"}
    # a saved calibration gives the same expectation without timing anything
    code = main(["estimate", "--configfile", str(path), "--cores", "2", "--calibration", str(tmp_path / "cal.json"),
                 "--repetitions", "20", "--json", str(tmp_path / "again.json")])
    assert code == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["prediction"]["expected_cpu"] == pytest.approx(record["prediction"]["expected_cpu"])


def test_estimate_rejects_a_malformed_config(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace("n_trials: 2", "n_trail: 2"))
    assert main(["estimate", "--configfile", str(path)]) == 2
    err = capsys.readouterr().err
    assert "n_trail" in err and "n_trials" in err
    assert main(["estimate", "--configfile", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    path.write_text(TINY)
    assert main(["estimate", "--configfile", str(path), "--calibration", str(path)]) == 2
    assert "calibration" in capsys.readouterr().err
