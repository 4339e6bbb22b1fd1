"""Configuration of one segregated-dendrite network: its numbers, switches and their validation.

:class:`Config` holds every number and switch of a network (names as in the
paper and its reference code); :func:`validate` rejects invalid combinations
with an :class:`~bioplaus.errors.InvalidConfigurationError` naming the
parameters; :class:`ConfigCache` keeps the last validated one for as long
as the parameters it came from are unchanged; the model's fixed constants
(plateau offsets, Wald phase-length extension, sparse-feedback gain,
symmetric-weight noise) are defined here once. Equations: Guerguiev, Lillicrap & Richards (2017), eLife 6:e22901.
"""

from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass

import numpy as np

from bioplaus.errors import InvalidConfigurationError
from bioplaus.models.architecture import MAX_LAYERS

#: Plateau offset cap (steps before the phase end) and spread, as in the reference.
PLATEAU_OFFSET_MAX = 5
PLATEAU_OFFSET_SD = 3.0
#: Wald (inverse Gaussian) mean and scale of the extra phase length, reference values.
WALD_MEAN, WALD_SCALE = 2.0, 1.0
#: Sparse feedback: fraction of zeroed feedback weights, gain of the survivors.
SPARSE_FRACTION, SPARSE_GAIN = 0.8, 5.0
NOISY_SYMMETRIC_SD = 0.05
#: Weight optimisation: target mean and spread of the initial biases (feedforward and feedback).
INIT_B_AVG, INIT_B_SD = 0.8, 0.001
#: Spike uniforms are drawn for as many steps at once as fit in this many numbers.
UNIFORM_BLOCK = 1 << 20

@dataclass(frozen=True)
class Config:
    """All numbers and switches of one network (validated by :func:`validate`).

    ``sizes = (n_in, n_1, ..., n_out)``; ``n_out = units_per_class * n_classes``.
    Times are in steps; ``lambda_max`` is spikes per step; ``f_etas`` has one
    rate per layer (hidden layers then output), ``b_etas`` one per hidden layer.
    """

    sizes: tuple
    units_per_class: int = 1
    dt: float = 1.0
    l_f_phase: int = 2
    l_t_phase: int = 2
    l_f_phase_test: int = 2
    integration_time: int = 1
    integration_time_test: int = 1
    mem: int = 10
    lambda_max: float = 0.2
    tau_s: float = 3.0
    tau_L: float = 10.0
    g_B: float = 0.6
    g_A: float = 0.05
    E_E: float = 8.0
    E_I: float = -8.0
    f_etas: tuple = (0.21, 0.21)
    b_etas: tuple = (0.0,)
    use_sparse_feedback: bool = False
    use_conductances: bool = False
    use_broadcast: bool = True
    use_spiking_feedback: bool = False
    use_spiking_feedforward: bool = False
    use_symmetric_weights: bool = False
    noisy_symmetric_weights: bool = False
    update_feedback_weights: bool = False
    use_apical_conductance: bool = False
    use_weight_optimization: bool = True
    use_feedback_bias: bool = False
    use_rand_phase_lengths: bool = False
    use_rand_plateau_times: bool = False
    use_backprop: bool = False

    @property
    def n_layers(self):
        return len(self.sizes) - 1

    @property
    def g_L(self):
        return 1.0 / self.tau_L

    @property
    def g_A_eff(self):
        return self.g_A if self.use_apical_conductance else 0.0

    @property
    def g_D(self):
        return self.g_B

    @property
    def k_B(self):
        return self.g_B / (self.g_L + self.g_B + self.g_A_eff)

    @property
    def k_D(self):
        return self.g_D / (self.g_L + self.g_D)

    @property
    def P_hidden(self):
        return 20.0 / self.lambda_max

    @property
    def P_final(self):
        return 20.0 / self.lambda_max**2

    def feedback_source(self, l):
        """Index of the layer whose activity reaches hidden layer ``l``'s apical dendrite."""
        return self.n_layers - 1 if self.use_broadcast else l + 1


def validate(cfg: Config):
    """Raise :class:`InvalidConfigurationError` naming the parameters of an invalid combination."""
    def bad(msg):
        raise InvalidConfigurationError(msg)

    if len(cfg.sizes) < 2 or any(int(n) < 1 for n in cfg.sizes):
        bad(f"layer sizes must be positive integers, got {cfg.sizes}")
    for name in ("l_f_phase", "l_t_phase", "l_f_phase_test", "integration_time",
                 "integration_time_test", "mem", "units_per_class"):
        if int(getattr(cfg, name)) < 1:
            bad(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.integration_time > min(cfg.l_f_phase, cfg.l_t_phase):
        bad(f"integration_time ({cfg.integration_time}) is longer than a training phase "
            f"(l_f_phase={cfg.l_f_phase}, l_t_phase={cfg.l_t_phase})")
    if cfg.integration_time_test > cfg.l_f_phase_test:
        bad(f"integration_time_test ({cfg.integration_time_test}) is longer than the test phase "
            f"(l_f_phase_test={cfg.l_f_phase_test})")
    for name in ("dt", "lambda_max", "tau_s", "tau_L", "g_B"):
        v = getattr(cfg, name)
        if not (np.isfinite(v) and v > 0):
            bad(f"{name} must be a positive number, got {v}")
    if cfg.tau_s == cfg.tau_L:
        bad(f"tau_s and tau_L must differ (PSP kernel), both are {cfg.tau_s}")
    if cfg.use_apical_conductance and not (np.isfinite(cfg.g_A) and cfg.g_A >= 0):
        bad(f"g_A must be non-negative with use_apical_conductance, got {cfg.g_A}")
    for name in ("E_E", "E_I"):
        if not np.isfinite(getattr(cfg, name)):
            bad(f"{name} must be finite")
    if len(cfg.f_etas) != cfg.n_layers:
        bad(f"f_etas needs one rate per layer ({cfg.n_layers}), got {len(cfg.f_etas)}")
    if len(cfg.b_etas) != cfg.n_layers - 1:
        bad(f"b_etas needs one rate per hidden layer ({cfg.n_layers - 1}), got {len(cfg.b_etas)}")
    if not all(np.isfinite(cfg.f_etas)) or not all(np.isfinite(cfg.b_etas)):
        bad("f_etas and b_etas must be finite")
    if cfg.use_backprop and cfg.n_layers < 2:
        bad("use_backprop needs at least one hidden layer")
    if cfg.noisy_symmetric_weights and not cfg.use_symmetric_weights:
        bad("noisy_symmetric_weights requires use_symmetric_weights")


SWITCHES = (
    "use_sparse_feedback", "use_conductances", "use_broadcast", "use_spiking_feedback",
    "use_spiking_feedforward", "use_symmetric_weights", "noisy_symmetric_weights",
    "update_feedback_weights", "use_apical_conductance", "use_weight_optimization", "use_feedback_bias",
)
#: Settle steps of a phase of length ``L``: ``min(30, L // 2)`` (30 as in the reference's long phases).
SETTLE_MAX = 30


def settle_rule(phase_length: int) -> int:
    """Integration window (steps) of a phase: ``L - min(30, L // 2)``; always in ``[1, L]``.

    The reference used ``integration_time = L - 30`` for its 50- and 250-step
    phases and 1 step for its 2-step non-spiking phases; this rule gives both
    and stays valid for every phase length of the study's space.
    """
    L = int(phase_length)
    return L - min(SETTLE_MAX, L // 2)


#: The estimator parameters :func:`make_config` reads (the others, ``epochs``, ``shuffle``,
#: ``dtype``, ``random_state``, do not enter a :class:`Config`).
CONFIG_PARAMS = (
    "hidden_layer_sizes", "units_per_class", "dt", "l_f_phase", "l_t_phase", "l_f_phase_test",
    "integration_time", "integration_time_test", "mem", "lambda_max", "tau_s", "tau_L", "g_B", "g_A",
    "E_E", "E_I", "f_etas", "b_etas", *SWITCHES, "use_rand_phase_lengths", "use_rand_plateau_times",
    "use_backprop", "batch_size", "test_batch_size", "record_alignment",
)


class _Uncacheable(Exception):
    pass


_IMMUTABLE_SCALARS = (bool, int, float, str, type(None))


def _frozen(value):
    t = type(value)
    if t is float:  # hex tells -0.0 from 0.0
        return t, value.hex()
    if t in _IMMUTABLE_SCALARS:
        return t, value
    if t in (tuple, list):
        return t, tuple(_frozen(v) for v in value)
    if isinstance(value, np.generic):
        return t, _frozen(value.item())
    if t is np.ndarray:
        return t, value.dtype.str, value.shape, value.tobytes()
    raise _Uncacheable


def _immutable(value):
    t = type(value)
    return t in _IMMUTABLE_SCALARS or (t is tuple and all(map(_immutable, value))) or \
        (isinstance(value, np.generic) and not isinstance(value, np.void))


def param_values(params):
    """The values of :data:`CONFIG_PARAMS` in ``params`` (a mapping), as a tuple in that order."""
    return tuple(map(params.__getitem__, CONFIG_PARAMS))


class ConfigCache:
    """The last :class:`Config` built by :func:`make_config`, and when it may be reused.

    :meth:`get` returns it only if the parameter values :func:`make_config`
    reads are what they were, and the data shape is the same: when every value
    then was immutable (numbers, strings, None, NumPy scalars, tuples of those),
    it suffices that each is the very same object (an identity test per value);
    otherwise (lists, arrays) the values are compared with a snapshot taken then
    (type and value; floats bit for bit, so -0.0 is not 0.0; sequences element
    by element, so a list changed in place is seen). A value of any other type
    is never cached. Equal values give an equal configuration: make_config
    reads nothing else.
    """

    def __init__(self):
        self._values = self._snapshot = self._cfg = self._shape = None
        self._by_identity = False

    def get(self, values, shape):
        """The cached :class:`Config` for ``values`` (:func:`param_values`) and ``shape``, or None."""
        if self._cfg is None or shape != self._shape or len(values) != len(self._values):
            return None
        if self._by_identity:
            return self._cfg if all(map(operator.is_, values, self._values)) else None
        try:
            same = tuple(map(_frozen, values)) == self._snapshot
        except _Uncacheable:
            return None
        return self._cfg if same else None

    def put(self, values, shape, cfg):
        try:
            self._snapshot = tuple(map(_frozen, values))
        except _Uncacheable:
            self._cfg = None
            return
        self._values, self._shape, self._cfg = values, shape, cfg
        self._by_identity = all(map(_immutable, values))


def make_config(params, n_in, n_classes):
    """Validated :class:`Config` from an estimator's parameters (``get_params()``, or any mapping
    holding at least :data:`CONFIG_PARAMS`) and the data shape."""
    def integer(name, value, low=1):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral | float | np.floating) \
                or value != int(value) or int(value) < low:
            raise InvalidConfigurationError(f"{name} must be an integer >= {low}, got {value!r}")
        return int(value)

    def number(name, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
            raise InvalidConfigurationError(f"{name} must be a finite number, got {value!r}")
        return float(value)

    hidden = params["hidden_layer_sizes"]
    if isinstance(hidden, numbers.Integral):
        hidden = (hidden,)
    hidden = tuple(integer("hidden_layer_sizes", h) for h in hidden)
    if len(hidden) > MAX_LAYERS:
        raise InvalidConfigurationError(f"hidden_layer_sizes: at most {MAX_LAYERS} hidden layers")
    k = integer("units_per_class", params["units_per_class"])
    nL = len(hidden) + 1

    def rates(name, value, n):
        vals = (value,) * n if np.ndim(value) == 0 else tuple(value)
        if len(vals) != n:
            raise InvalidConfigurationError(f"{name} needs 1 or {n} values, got {len(vals)}")
        return tuple(number(name, v) for v in vals)

    dt = number("dt", params["dt"])
    l_f = integer("l_f_phase", params["l_f_phase"])
    l_t = integer("l_t_phase", params["l_t_phase"])
    l_test = integer("l_f_phase_test", params["l_f_phase_test"])
    T = settle_rule(min(l_f, l_t)) if params["integration_time"] is None else \
        integer("integration_time", params["integration_time"])
    T_test = settle_rule(l_test) if params["integration_time_test"] is None else \
        integer("integration_time_test", params["integration_time_test"])
    if not dt > 0:
        raise InvalidConfigurationError(f"dt must be positive, got {dt}")
    mem = max(1, int(round(10.0 / dt))) if params["mem"] is None else integer("mem", params["mem"])
    for name in (*SWITCHES, "use_rand_phase_lengths", "use_rand_plateau_times", "use_backprop"):
        if not isinstance(params[name], bool | np.bool_):
            raise InvalidConfigurationError(f"{name} must be True or False, got {params[name]!r}")
    cfg = Config(
        sizes=(int(n_in), *hidden, k * int(n_classes)), units_per_class=k, dt=dt,
        l_f_phase=l_f, l_t_phase=l_t, l_f_phase_test=l_test, integration_time=T,
        integration_time_test=T_test, mem=mem,
        **{n: number(n, params[n]) for n in ("lambda_max", "tau_s", "tau_L", "g_B", "g_A",
                                                    "E_E", "E_I")},
        f_etas=rates("f_etas", params["f_etas"], nL), b_etas=rates("b_etas", params["b_etas"], nL - 1),
        **{n: bool(params[n]) for n in (*SWITCHES, "use_rand_phase_lengths",
                                               "use_rand_plateau_times", "use_backprop")},
    )
    validate(cfg)
    integer("batch_size", params["batch_size"])
    integer("test_batch_size", params["test_batch_size"])
    state_mb = params["max_state_mb"]
    if isinstance(state_mb, bool) or not isinstance(state_mb, numbers.Real) or not np.isfinite(state_mb) \
            or state_mb <= 0:
        raise InvalidConfigurationError(f"max_state_mb must be a positive number of MiB, got {state_mb!r}")
    if not isinstance(params["record_alignment"], bool | np.bool_):
        raise InvalidConfigurationError(f"record_alignment must be True or False, got {params['record_alignment']!r}")
    return cfg
