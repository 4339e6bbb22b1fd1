"""A random-forest surrogate of accuracy over a search space, and its functional ANOVA.

Owns the surrogate model that the interaction table and the tunability shares
are read from: a scikit-learn ``RandomForestRegressor`` (fixed ``random_state``)
fitted on the uniformly random trials of one (dataset, model), with

* an encoding of points as feature rows (:class:`Encoder`): numbers as they are
  (``log10`` for log-scale distributions), categories by their index among the
  choices, and an *inactive* parameter (see :mod:`bioplaus.analysis.active`) as a
  sentinel below its range, so the trees can tell "not used" from any value;
* predictions at modified points (:meth:`Surrogate.predict_points`) that
  re-derive which parameters are active (setting ``num_layers`` to 4 makes the
  drawn ``h_l_3`` and ``h_l_4`` of a row count again);
* the functional ANOVA decomposition (Hutter, Hoos & Leyton-Brown 2014,
  "An efficient approach for assessing hyperparameter importance", ICML; after
  Hooker 2007) estimated by Monte Carlo over the trials themselves:
  :meth:`Surrogate.main_effect` and :meth:`Surrogate.pair_effect`.

The Monte Carlo estimator. The random sampler draws every parameter
independently, so the trials' own values are a sample of the product measure
over the space. For a parameter *j* let *R* be the trials where *j* is active
and *G* a grid of values of *j* with weights *w* (its distinct active values
weighted by frequency when there are at most :data:`GRID_POINTS`, else the
``(i + 1/2) / GRID_POINTS`` quantiles of its active values, equal weights).
With ``P[g, r] = f(x_j = G_g, x_-j = x_-j^r)`` (the surrogate's prediction for
row *r* with *j* set to ``G_g``):

* ``a_j(G_g) = mean_r P[g, r]`` (the marginal of *j*, Hutter et al. eq. 1),
  ``f_0 = sum_g w_g a_j(G_g)``;
* ``V_j = sum_g w_g (a_j(G_g) - f_0)^2`` and ``V = sum_{g,r} (w_g / |R|) (P[g, r] - f_0)^2``;
* main-effect fraction ``V_j / V`` (Hutter et al. eq. 3 with the empirical measure).

For a pair (*j*, *k*) over the trials where both are active, on a
``PAIR_GRID_POINTS`` x ``PAIR_GRID_POINTS`` grid:
``f_jk = a_jk - a_j - a_k + f_0`` and the interaction fraction is
``sum w_g w_h f_jk^2 / V`` (Hutter et al. eq. 2-3: the variance of the pure
pairwise component).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from bioplaus.analysis.active import InactiveFn, active_set

#: grid of one parameter's values for its marginal (quantiles of its active values)
GRID_POINTS = 16
#: grid per parameter for a pairwise interaction (PAIR_GRID_POINTS ** 2 cells)
PAIR_GRID_POINTS = 6
#: trees of the surrogate forest
N_TREES = 64
#: leaf size of the surrogate's trees (smooths the noise of single trials)
MIN_SAMPLES_LEAF = 2


class Encoder:
    """Points (``{name: value}``) as float feature rows; inactive parameters as a sentinel.

    Parameters
    ----------
    space : mapping of str to optuna distribution
        The model's search space (fixes the column order).
    inactive : callable or None
        ``inactive(point) -> names`` (None: every parameter always active).
    """

    def __init__(self, space: Mapping[str, BaseDistribution], inactive: InactiveFn | None):
        self.names = list(space)
        self.space = dict(space)
        self.inactive = inactive
        self.sentinel = np.empty(len(self.names))
        for i, name in enumerate(self.names):
            low, high = self._range(space[name])
            self.sentinel[i] = low - max(high - low, 1.0)

    @staticmethod
    def _range(distribution: BaseDistribution) -> tuple[float, float]:
        if isinstance(distribution, CategoricalDistribution):
            return 0.0, float(len(distribution.choices) - 1)
        low, high = float(distribution.low), float(distribution.high)
        if getattr(distribution, "log", False):
            return float(np.log10(low)), float(np.log10(high))
        return low, high

    def value(self, name: str, value: Any) -> float:
        """Feature value of one (active) parameter value."""
        distribution = self.space[name]
        if isinstance(distribution, CategoricalDistribution):
            for index, choice in enumerate(distribution.choices):
                if value == choice:
                    return float(index)
            raise ValueError(f"parameter {name!r}: {value!r} is not one of {distribution.choices}")
        number = float(value)
        if getattr(distribution, "log", False):
            return float(np.log10(max(number, 1e-300)))
        return number

    def active(self, point: Mapping[str, Any]) -> set[str]:
        return active_set(point, self.inactive)

    def encode(self, points: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``(len(points), len(space))`` feature matrix."""
        rows = np.empty((len(points), len(self.names)))
        for r, point in enumerate(points):
            active = self.active(point)
            for i, name in enumerate(self.names):
                rows[r, i] = self.value(name, point[name]) if name in active else self.sentinel[i]
        return rows


def grid(values: Sequence[Any], distribution: BaseDistribution, size: int = GRID_POINTS
         ) -> tuple[list[Any], np.ndarray]:
    """Grid of a parameter's values and their weights (sum 1), from its observed active values.

    Categorical: the choices observed, weighted by frequency. Numeric with at
    most ``size`` distinct values: those, weighted by frequency; otherwise the
    ``(i + 1/2) / size`` quantiles (rounded for integers), equal weights.
    """
    values = [v for v in values if v is not None]
    if not values:
        return [], np.array([])
    if isinstance(distribution, CategoricalDistribution):
        levels = [c for c in distribution.choices if any(v == c for v in values)]
        counts = np.array([sum(v == c for v in values) for c in levels], dtype=float)
        return levels, counts / counts.sum()
    numbers = np.asarray(values, dtype=float)
    distinct, counts = np.unique(numbers, return_counts=True)
    if len(distinct) <= size:
        out = [int(v) if isinstance(distribution, IntDistribution) else float(v) for v in distinct]
        return out, counts / counts.sum()
    probabilities = (np.arange(size) + 0.5) / size
    if getattr(distribution, "log", False):
        points = 10 ** np.quantile(np.log10(numbers), probabilities)
    else:
        points = np.quantile(numbers, probabilities)
    if isinstance(distribution, IntDistribution):
        points = np.round(points).astype(int)
        return [int(v) for v in points], np.full(size, 1.0 / size)
    return [float(v) for v in points], np.full(size, 1.0 / size)


@dataclass
class Surrogate:
    """A random forest fitted on trial points (see module docstring); ``fit`` builds it.

    Attributes
    ----------
    encoder : Encoder
    points : list of dict
        The (raw) trial points the forest was fitted on, ``n`` of them.
    accuracy : ndarray, shape (n,)
    forest_ : sklearn.ensemble.RandomForestRegressor
    active_ : ndarray of bool, shape (n, p)
    parents_ : set of str
        Parameters whose value changes which other parameters are active.
    """

    encoder: Encoder
    points: list
    accuracy: np.ndarray
    seed: int = 0
    forest_: Any = None
    active_: np.ndarray = field(default=None, repr=False)
    parents_: set = field(default_factory=set)

    @classmethod
    def fit(cls, points, accuracy, space, inactive, *, seed: int = 0, parents: set | None = None):
        """Fit ``RandomForestRegressor(N_TREES, min_samples_leaf=MIN_SAMPLES_LEAF, random_state=seed)``."""
        from sklearn.ensemble import RandomForestRegressor

        encoder = Encoder(space, inactive)
        surrogate = cls(encoder=encoder, points=[dict(p) for p in points],
                        accuracy=np.asarray(accuracy, dtype=float), seed=seed)
        X = encoder.encode(surrogate.points)
        surrogate.active_ = X != encoder.sentinel[None, :]
        forest = RandomForestRegressor(n_estimators=N_TREES, min_samples_leaf=MIN_SAMPLES_LEAF,
                                       random_state=seed, n_jobs=1)
        forest.fit(X, surrogate.accuracy)
        surrogate.forest_ = forest
        surrogate.parents_ = parents if parents is not None else find_parents(
            surrogate.points, space, encoder)
        return surrogate

    # ------------------------------------------------------------------ predictions
    def predict_points(self, points: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Predicted accuracy of raw points (activity re-derived per point)."""
        return self.forest_.predict(self.encoder.encode(points))

    def _set(self, rows: np.ndarray, assignment: Mapping[str, Any]) -> np.ndarray:
        """Feature rows of trials ``rows`` with the parameters of ``assignment`` set."""
        enc = self.encoder
        if set(assignment) & self.parents_:
            return enc.encode([{**self.points[r], **assignment} for r in rows])
        X = np.where(self.active_[rows], self._raw[rows], enc.sentinel[None, :])
        for name, value in assignment.items():
            X[:, enc.names.index(name)] = enc.value(name, value)
        return X

    @property
    def _raw(self) -> np.ndarray:
        if not hasattr(self, "_raw_cache"):
            enc = self.encoder
            self._raw_cache = np.array([[enc.value(n, p[n]) if p[n] is not None else np.nan
                                         for n in enc.names] for p in self.points])
        return self._raw_cache

    def _active_rows(self, *names: str) -> np.ndarray:
        columns = [self.encoder.names.index(n) for n in names]
        return np.flatnonzero(self.active_[:, columns].all(axis=1))

    # ------------------------------------------------------------------ functional ANOVA
    def main_effect(self, name: str, size: int = GRID_POINTS) -> dict[str, Any]:
        """Marginal of ``name`` and its variance fraction (module docstring).

        Returns ``{"grid", "weights", "marginal", "fraction", "n_active"}``;
        ``fraction`` is NaN when ``name`` is active in fewer than 2 trials.
        """
        return self.main_effects([name], size)[name]

    def main_effects(self, names: Sequence[str], size: int = GRID_POINTS) -> dict[str, dict[str, Any]]:
        """:meth:`main_effect` of each of ``names``, with one forest prediction for all of them."""
        plans, blocks = {}, []
        for name in names:
            rows = self._active_rows(name)
            values, weights = grid([self.points[r][name] for r in rows], self.encoder.space[name], size)
            plans[name] = (rows, values, weights, len(blocks))
            if len(rows) >= 2 and len(values):
                blocks += [self._set(rows, {name: v}) for v in values]
        predictions = self.forest_.predict(np.vstack(blocks)) if blocks else np.array([])
        sizes = np.cumsum([0] + [len(b) for b in blocks])
        out = {}
        for name, (rows, values, weights, first) in plans.items():
            if len(rows) < 2 or not len(values):
                out[name] = {"grid": values, "weights": weights, "marginal": np.array([]),
                             "fraction": np.nan, "n_active": len(rows)}
                continue
            P = predictions[sizes[first]:sizes[first + len(values)]].reshape(len(values), len(rows))
            marginal = P.mean(axis=1)
            f0 = float(weights @ marginal)
            total = float(weights @ ((P - f0) ** 2).mean(axis=1))
            main = float(weights @ (marginal - f0) ** 2)
            out[name] = {"grid": values, "weights": weights, "marginal": marginal,
                         "fraction": main / total if total > 0 else 0.0, "n_active": len(rows)}
        return out

    def pair_effect(self, first: str, second: str, size: int = PAIR_GRID_POINTS) -> dict[str, Any]:
        """Variance fraction of the pure interaction of two parameters (module docstring)."""
        rows = self._active_rows(first, second)
        space = self.encoder.space
        g1, w1 = grid([self.points[r][first] for r in rows], space[first], size)
        g2, w2 = grid([self.points[r][second] for r in rows], space[second], size)
        if len(rows) < 2 or not len(g1) or not len(g2):
            return {"fraction": np.nan, "n_active": len(rows)}
        X = np.vstack([self._set(rows, {first: u, second: v}) for u in g1 for v in g2])
        P = self.forest_.predict(X).reshape(len(g1), len(g2), len(rows))
        joint = P.mean(axis=2)
        weights = np.outer(w1, w2)
        f0 = float((weights * joint).sum())
        m1 = (joint * w2[None, :]).sum(axis=1)
        m2 = (joint * w1[:, None]).sum(axis=0)
        pure = joint - m1[:, None] - m2[None, :] + f0
        total = float((weights * ((P - f0) ** 2).mean(axis=2)).sum())
        value = float((weights * pure**2).sum())
        return {"fraction": value / total if total > 0 else 0.0, "n_active": len(rows)}


def find_parents(points: Sequence[Mapping[str, Any]], space: Mapping[str, BaseDistribution],
                 encoder: Encoder, max_rows: int = 30) -> set[str]:
    """Parameters whose value changes the activity of another (checked on up to ``max_rows`` points)."""
    if encoder.inactive is None:
        return set()
    sample = list(points[:max_rows])
    parents = set()
    for name, distribution in space.items():
        values, _ = grid([p[name] for p in points], distribution, GRID_POINTS)
        for point in sample:
            base = encoder.active(point) - {name}
            if any(encoder.active({**point, name: v}) - {name} != base for v in values):
                parents.add(name)
                break
    return parents
