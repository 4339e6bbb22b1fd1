"""Samplers of the study: ``gp`` (scikit-optimize GP-BO), ``tpe`` and ``random`` (optuna).

Every sampler is rebuilt for each trial with a seed derived from the study
seed and the trial's *draw index* (:class:`PerTrialSeededSampler`; the draw
index counts the fresh trials before it, see
:func:`bioplaus.study.slots.draw_index`; a re-queued copy takes its origin's),
so a trial's suggestion depends only on the study's history and its draw:
not on the process that asks, the number of workers, or where a killed run
resumed. For ``random`` this makes a draw's configuration a pure function of
(seed, draw index). ``tpe`` and ``gp`` also depend on the history they see:
one worker, killed and resumed, sees the same history (a killed trial is
re-run with its own parameters, or re-drawn with its own seed before any
other trial finishes) and so makes the same suggestions; several workers see
each other's pending trials at moments that depend on timing, so their
suggestions (not the seeds) vary from run to run.

``gp`` reproduces the 2019 study's optimiser: a Gaussian process with a
Matern 5/2 kernel (scikit-optimize's default GP kernel) and a confidence-bound
acquisition with kappa = 2.5 (the reference maximised UCB on accuracy;
minimising LCB on the negated accuracy is the same rule). It drives
``skopt.Optimizer`` through ask/tell behind optuna's sampler interface: at
each trial a fresh optimiser is told every finished trial (invalid trials
with their penalty value, so it learns where the space is invalid) and, as
a constant liar, every trial still running in another worker, then asked
for one point. Integer and categorical parameters are skopt ``Integer`` and
``Categorical`` dimensions: nothing is rounded outside the optimiser.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from bioplaus.errors import ConfigError
from bioplaus.study.seeds import SAMPLER, derive_seed

#: each sampler's seed stream (the key after ``SAMPLER`` in :func:`derive_seed`),
#: so that ``gp``, ``tpe`` and ``random`` draw different initial points from one
#: study seed. FROZEN: a sampler's stream fixes its numbers, so existing values
#: never change; a new sampler takes a new, unused integer (never reuse or
#: renumber one), whatever its place in this mapping.
SAMPLER_STREAMS = {"gp": 0, "tpe": 1, "random": 2}
#: the registered samplers, in the order they are listed
SAMPLERS = tuple(SAMPLER_STREAMS)
#: samplers whose suggestion depends on the other workers' pending trials
MODEL_BASED_SAMPLERS = ("gp", "tpe")


def to_skopt_dimensions(space: Mapping[str, BaseDistribution]) -> list:
    """optuna distributions → ``skopt.space`` dimensions (same order as ``space``)."""
    from skopt.space import Categorical, Integer, Real

    dims = []
    for name, dist in space.items():
        if isinstance(dist, IntDistribution):
            dims.append(Integer(dist.low, dist.high, prior="log-uniform" if dist.log else "uniform", name=name))
        elif isinstance(dist, FloatDistribution):
            dims.append(Real(dist.low, dist.high, prior="log-uniform" if dist.log else "uniform", name=name))
        elif isinstance(dist, CategoricalDistribution):
            dims.append(Categorical(list(dist.choices), name=name))
        else:  # pragma: no cover - optuna has no other distribution types
            raise TypeError(f"unsupported distribution for {name}: {dist!r}")
    return dims


def _from_skopt(value: Any, dist: BaseDistribution) -> Any:
    if isinstance(dist, IntDistribution):
        return int(value)
    if isinstance(dist, FloatDistribution):
        return float(min(max(float(value), dist.low), dist.high))
    for choice in dist.choices:  # Categorical: return the declared Python object
        if choice == value:
            return choice
    raise ValueError(f"skopt returned {value!r}, not one of {dist.choices}")


class SkoptGPSampler(BaseSampler):
    """Gaussian-process Bayesian optimisation (scikit-optimize) as an optuna sampler.

    Parameters
    ----------
    search_space: the fixed space of the objective (every trial suggests all of it).
    seed: seed of this trial's random initial point / acquisition optimisation.
    n_initial_points: random points before the GP takes over (counting pending ones).
    kappa: exploration weight of the confidence-bound acquisition.
    """

    def __init__(
        self,
        search_space: Mapping[str, BaseDistribution],
        *,
        seed: int | None = None,
        n_initial_points: int = 5,
        kappa: float = 2.5,
    ) -> None:
        self._space = dict(search_space)
        self._seed = seed
        self._n_initial_points = int(n_initial_points)
        self._kappa = float(kappa)
        self._independent = RandomSampler(seed=seed)

    def reseed_rng(self) -> None:  # pragma: no cover - optuna hook
        self._independent.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def _observations(self, study, trial: FrozenTrial):
        names = list(self._space)
        X, y, pending = [], [], []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if t.number == trial.number or not all(n in t.params for n in names):
                continue
            point = [t.params[n] for n in names]
            if t.state == TrialState.COMPLETE and t.value is not None and np.isfinite(t.value):
                X.append(point)
                sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
                y.append(sign * float(t.value))
            elif t.state == TrialState.RUNNING:
                pending.append(point)
        return X, y, pending

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        if not search_space:
            return {}
        from skopt import Optimizer

        names = list(self._space)
        X, y, pending = self._observations(study, trial)
        opt = Optimizer(
            to_skopt_dimensions(self._space),
            base_estimator="GP",
            acq_func="LCB",
            acq_func_kwargs={"kappa": self._kappa},
            n_initial_points=self._n_initial_points,
            initial_point_generator="random",
            random_state=self._seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if pending:  # constant liar: pretend running points scored the best value so far
                lie = min(y) if y else 0.0
                X, y = X + pending, y + [lie] * len(pending)
            if X:
                opt.tell(X, y)
            point = opt.ask()
        return {n: _from_skopt(v, self._space[n]) for n, v in zip(names, point)}

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        return self._independent.sample_independent(study, trial, param_name, param_distribution)


def draw_seed(seed: int, stream: int, draw: int) -> int:
    """The seed of draw ``draw``'s sampler in a study seeded ``seed`` (``stream``: :data:`SAMPLER_STREAMS`)."""
    return derive_seed(int(seed), SAMPLER, int(stream), int(draw))


class PerTrialSeededSampler(BaseSampler):
    """Wraps a sampler factory; a trial of draw index ``d`` gets ``factory(derive_seed(seed, SAMPLER, stream, d))``.

    ``stream`` separates samplers of the same study seed (``gp``, ``tpe`` and
    ``random`` draw different initial points): :data:`SAMPLER_STREAMS`."""

    def __init__(self, factory: Callable[[int], BaseSampler], seed: int, stream: int = 0) -> None:
        self._factory = factory
        self._seed = int(seed)
        self._stream = int(stream)
        self._cache: dict[int, BaseSampler] = {}
        self._study = None

    def _sampler(self, trial: FrozenTrial) -> BaseSampler:
        s = self._cache.get(trial.number)
        if s is None:
            if len(self._cache) > 64:
                self._cache.clear()
            s = self._cache[trial.number] = self._factory(draw_seed(self._seed, self._stream, self._draw(trial)))
        return s

    def _draw(self, trial: FrozenTrial) -> int:
        from bioplaus.study.slots import draw_index

        study = self._study
        origin = int(trial.user_attrs.get("origin", trial.number))
        if study is None:  # used outside a study's ask: the trial number is the draw
            return origin
        return draw_index(study.get_trials(deepcopy=False), origin)

    def reseed_rng(self) -> None:  # seeds are derived, nothing to reseed
        pass

    def infer_relative_search_space(self, study, trial):
        self._study = study
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        self._study = study
        return self._sampler(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        self._study = study
        return self._sampler(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self._study = study
        self._sampler(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self._study = study
        self._sampler(trial).after_trial(study, trial, state, values)
        self._cache.pop(trial.number, None)


def make_sampler(
    name: str,
    search_space: Mapping[str, BaseDistribution],
    seed: int,
    *,
    n_initial_points: int = 5,
    kappa: float = 2.5,
) -> BaseSampler:
    """The study's sampler ``name`` (``gp``, ``tpe`` or ``random``), seeded per trial."""
    if name == "gp":
        factory = lambda s: SkoptGPSampler(search_space, seed=s, n_initial_points=n_initial_points, kappa=kappa)  # noqa: E731
    elif name == "tpe":
        def factory(s):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return TPESampler(seed=s, n_startup_trials=n_initial_points, multivariate=True, constant_liar=True)
    elif name == "random":
        factory = lambda s: RandomSampler(seed=s)  # noqa: E731
    else:
        raise ConfigError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    return PerTrialSeededSampler(factory, seed, stream=SAMPLER_STREAMS[name])


def suggest_all(trial: optuna.Trial, space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """Suggest every parameter of ``space`` with its declared type (int, float, categorical)."""
    params: dict[str, Any] = {}
    for name, dist in space.items():
        if isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, FloatDistribution):
            params[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, dist.choices)
        else:  # pragma: no cover
            raise TypeError(f"unsupported distribution for {name}: {dist!r}")
    return params
