"""Samplers: declared types honoured, seeds per trial number, GP sees pending and invalid trials."""

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from bioplaus.errors import ConfigError
from bioplaus.study import samplers
from bioplaus.study.samplers import SkoptGPSampler, make_sampler, suggest_all, to_skopt_dimensions
from bioplaus.study.seeds import SAMPLER, derive_seed

SPACE = {
    "lr": FloatDistribution(1e-4, 0.05, log=True),
    "units": IntDistribution(30, 500),
    "layers": IntDistribution(1, 6),
    "switch": CategoricalDistribution([False, True]),
}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _objective(trial):
    p = suggest_all(trial, SPACE)
    return -abs(p["units"] - 300) / 300 - abs(p["layers"] - 2) + (0.5 if p["switch"] else 0.0)


def _run(name, n=12, seed=1):
    study = optuna.create_study(direction="maximize", sampler=make_sampler(name, SPACE, seed, n_initial_points=4))
    study.optimize(_objective, n_trials=n)
    return study


@pytest.mark.parametrize("name", ["gp", "tpe", "random"])
def test_types_are_the_declared_ones_and_runs_repeat(name):
    a, b = _run(name, n=7), _run(name, n=7)
    for t in a.trials:
        assert type(t.params["units"]) is int and 30 <= t.params["units"] <= 500
        assert type(t.params["layers"]) is int
        assert type(t.params["switch"]) is bool
        assert 1e-4 <= t.params["lr"] <= 0.05
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.params for t in _run(name, n=7, seed=2).trials] != [t.params for t in a.trials]


def test_samplers_draw_different_initial_points():
    first = {name: _run(name, n=2).trials[0].params for name in ("gp", "tpe", "random")}
    assert first["gp"] != first["tpe"] != first["random"] != first["gp"]


def test_gp_concentrates_on_good_regions():
    """After its random initial points the GP's suggestions score better than random ones on average."""
    gp, rnd = _run("gp", n=14), _run("random", n=14)
    mean = lambda study: sum(t.value for t in study.trials[4:]) / len(study.trials[4:])  # noqa: E731
    assert mean(gp) > mean(rnd)


def test_random_trial_depends_on_number_only():
    """Trial k of the random sampler draws the same point whatever happened before it."""
    a = _run("random", n=6)
    b = optuna.create_study(direction="maximize", sampler=make_sampler("random", SPACE, 1))
    for _ in range(6):  # a different history: other values, some failures
        t = b.ask()
        suggest_all(t, SPACE)
        b.tell(t, state=TrialState.FAIL) if t.number % 2 else b.tell(t, 0.0)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]


def test_seed_streams_are_frozen_per_sampler_name(monkeypatch):
    """A sampler's seed stream is a constant of its name, not its place in ``SAMPLERS``:
    listing the samplers in another order, or adding one, shifts no sampler's numbers."""
    assert samplers.SAMPLER_STREAMS == {"gp": 0, "tpe": 1, "random": 2}  # the streams all results used
    assert [derive_seed(1, SAMPLER, samplers.SAMPLER_STREAMS[n], 0) for n in ("gp", "tpe", "random")] \
        == [798405205, 415021730, 1933120797]

    def asked(n=4):
        study = optuna.create_study(sampler=make_sampler("random", SPACE, 1))
        return [study.ask(SPACE).params for _ in range(n)]

    today = asked()
    # trial k draws with derive_seed(study seed, SAMPLER, stream of "random", k)
    expected = [optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=derive_seed(1, SAMPLER, 2, k)))
                .ask(SPACE).params for k in range(4)]
    assert today == expected
    monkeypatch.setattr(samplers, "SAMPLERS", ("random", "new", "tpe", "gp"))
    assert asked() == today


def test_gp_constant_liar_avoids_pending_point():
    study = optuna.create_study(direction="maximize")
    for value, units in ((0.1, 50), (0.9, 300), (0.2, 480), (0.5, 200), (0.3, 100)):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": 0.01, "units": units, "layers": 2, "switch": False},
            distributions=SPACE, value=value))
    sampler = SkoptGPSampler(SPACE, seed=3, n_initial_points=2)
    first = study.ask(fixed_distributions={})
    p1 = sampler.sample_relative(study, study._storage.get_trial(first._trial_id), SPACE)
    for k, v in p1.items():
        first.suggest_categorical(k, [v]) if isinstance(v, bool) else None
    study._storage.set_trial_param(first._trial_id, "units", float(p1["units"]), SPACE["units"])
    study._storage.set_trial_param(first._trial_id, "lr", p1["lr"], SPACE["lr"])
    study._storage.set_trial_param(first._trial_id, "layers", float(p1["layers"]), SPACE["layers"])
    second = study.ask()
    p2 = sampler.sample_relative(study, study._storage.get_trial(second._trial_id), SPACE)
    assert p2 != p1  # the running trial is accounted for, not proposed again


def test_skopt_dimensions_mirror_declarations():
    dims = {d.name: d for d in to_skopt_dimensions(SPACE)}
    assert dims["lr"].prior == "log-uniform"
    assert type(dims["units"]).__name__ == "Integer"
    assert type(dims["switch"]).__name__ == "Categorical"


def test_unknown_sampler_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown sampler 'bo'"):
        make_sampler("bo", SPACE, 1)
