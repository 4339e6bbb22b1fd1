"""The segregated-dendrite network as a registered model: its search space, default and builder.

``SPEC`` registers :class:`~.estimator.SegregatedDendriteClassifier` as
``segdend``; the space is the 2019 review's table (names as in its logs, so
the reference logs line up), and ``DEFAULT_PARAMS`` is the paper's main
non-spiking setting (Guerguiev, Lillicrap & Richards 2017).
"""

from __future__ import annotations

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from bioplaus.models.architecture import default_widths, hidden_layer_space, hidden_sizes, unused_widths
from bioplaus.models.registry import ModelSpec, compile_on_a_copy
from bioplaus.models.segdend.config import SWITCHES
from bioplaus.models.segdend.estimator import SegregatedDendriteClassifier
from bioplaus.models.segdend.state import State


def search_space(options=None):
    """The reference study's space (names as in its logs); fixed key set."""
    space = {name: CategoricalDistribution([False, True]) for name in SWITCHES}
    space.update({
        "dt": FloatDistribution(0.1, 1.0),
        "l_f_phase": IntDistribution(2, 50),
        "l_t_phase": IntDistribution(2, 50),
        "l_f_phase_test": IntDistribution(50, 100),
        "lambda_max": FloatDistribution(0.2, 0.5),
        "tau_s": FloatDistribution(1.0, 5.0),
        "tau_L": FloatDistribution(7.0, 13.0),
        "g_B": FloatDistribution(0.3, 0.9),
        "g_A": FloatDistribution(0.02, 0.1),
        "E_E": FloatDistribution(5.0, 12.0),
        "E_I": FloatDistribution(-12.0, -5.0),
        "f_etas": FloatDistribution(0.01, 0.5),
        "b_etas": FloatDistribution(0.01, 0.5),
    })
    space.update(hidden_layer_space())
    return space


#: ``model_options.segdend``: fixed estimator settings (JSON-schema fragments; see ModelSpec.options).
OPTIONS = {
    "batch_size": {"type": "integer", "minimum": 1,
                   "description": "examples simulated side by side (1: the paper's online rule)"},
    "dtype": {"type": "string", "enum": ["float32", "float64"], "description": "floating-point precision"},
    "units_per_class": {"type": "integer", "minimum": 1, "description": "output units per class"},
    "test_batch_size": {"type": "integer", "minimum": 1, "description": "examples simulated side by side when testing"},
    "max_state_mb": {"type": "number", "exclusiveMinimum": 0,
                     "description": "bound (MiB) of a test batch's simulation state (rows simulated in groups, same spikes)"},
    "record_alignment": {"type": "boolean",
                         "description": "record the angle between the rule's hidden updates and the backprop "
                                        "control's (use_backprop) from the same simulated state"},
}


def build(params, *, input_shape, n_classes, epochs, random_state, options=None):
    """An unfitted classifier for one sampled point.

    Windows: ``integration_time = settle_rule(min(l_f_phase, l_t_phase))`` and
    ``integration_time_test = settle_rule(l_f_phase_test)`` (settle
    ``min(30, L // 2)`` steps), always valid. ``mem = int(10 / dt)`` as in the
    reference. ``noisy_symmetric_weights`` is passed on only with
    ``use_symmetric_weights``: the noise perturbs imposed symmetric feedback,
    so without it the switch has no effect, and the 2019 study ran such points
    with the noise ignored; mapping them to ``False`` makes them valid runs
    instead of wasted samples (the estimator itself rejects the explicit
    combination), and the sampled value stays in the trial's parameters. ``options`` (:data:`OPTIONS`) go to the estimator as given;
    the estimator's defaults apply to the others.
    """
    options = SPEC.resolve_options(options)
    hidden = hidden_sizes(params)
    kwargs = {name: bool(params[name]) for name in SWITCHES}
    for name in ("dt", "lambda_max", "tau_s", "tau_L", "g_B", "g_A", "E_E", "E_I", "f_etas", "b_etas"):
        kwargs[name] = float(params[name])
    for name in ("l_f_phase", "l_t_phase", "l_f_phase_test"):
        kwargs[name] = int(params[name])
    if not kwargs["update_feedback_weights"]:
        kwargs["b_etas"] = 0.0
    if not kwargs["use_symmetric_weights"]:  # no symmetric feedback to perturb: as the 2019 runs
        kwargs["noisy_symmetric_weights"] = False
    return SegregatedDendriteClassifier(
        hidden_layer_sizes=hidden,
        **kwargs,
        **options,
        epochs=int(epochs),
        random_state=random_state,
    )


#: The paper's main non-spiking setting (specification, "Defaults") as a point of the space.
DEFAULT_PARAMS = {
    "use_sparse_feedback": False, "use_conductances": False, "use_broadcast": True,
    "use_spiking_feedback": False, "use_spiking_feedforward": False, "use_symmetric_weights": False,
    "noisy_symmetric_weights": False, "update_feedback_weights": False, "use_apical_conductance": False,
    "use_weight_optimization": True, "use_feedback_bias": False,
    "dt": 1.0, "l_f_phase": 2, "l_t_phase": 2, "l_f_phase_test": 2, "lambda_max": 0.2, "tau_s": 3.0,
    "tau_L": 10.0, "g_B": 0.6, "g_A": 0.0, "E_E": 8.0, "E_I": -8.0, "f_etas": 0.21, "b_etas": 0.0,
    "num_layers": 1, **default_widths(500, 1, 100),
}


def inactive(params):
    """Hyperparameters without effect in this point: widths beyond ``num_layers``; ``b_etas`` without
    ``update_feedback_weights`` (build sets it to 0); ``g_A`` without ``use_apical_conductance``;
    ``noisy_symmetric_weights`` without ``use_symmetric_weights`` (build sets it to False); ``use_broadcast`` with one hidden
    layer (the output layer is the only feedback source either way)."""
    names = unused_widths(params)
    if not params["update_feedback_weights"]:
        names.append("b_etas")
    if not params["use_apical_conductance"]:
        names.append("g_A")
    if not params["use_symmetric_weights"]:
        names.append("noisy_symmetric_weights")
    if int(params["num_layers"]) == 1:
        names.append("use_broadcast")
    return names


#: switch values that give a simulation its largest state: spike rings for every source and pathway,
#: apical compartments simulated at test, feedback from the layer above (500 units, not the output's 10)
LARGEST_STATE_SWITCHES = {
    "use_spiking_feedforward": True, "use_spiking_feedback": True, "use_conductances": True,
    "use_apical_conductance": True, "update_feedback_weights": True, "use_broadcast": False,
    "use_feedback_bias": True,
}


def largest_state_params(options=None):
    """The point of :func:`search_space` with the largest simulation state: the deepest, widest
    network, the smallest ``dt`` (a spike memory of ``10 / dt`` steps), the longest phases and
    :data:`LARGEST_STATE_SWITCHES`."""
    params = {}
    for name, dist in search_space(options).items():
        if isinstance(dist, CategoricalDistribution):
            params[name] = LARGEST_STATE_SWITCHES.get(name, False)
        else:
            params[name] = dist.low if name == "dt" else dist.high
    return params


def memory_mb(options, input_shape, n_classes=10):
    """Peak MB of the simulator's arrays at :func:`largest_state_params`: the training state of
    ``batch_size`` rows or a test batch's state (groups of rows within ``max_state_mb``),
    whichever is larger, plus three copies of the weights (weights, feedback, their updates)."""
    est = build(largest_state_params(options), input_shape=input_shape, n_classes=n_classes, epochs=1,
                random_state=0, options=options)
    c, h, w = input_shape
    cfg = est._make_config(c * h * w, n_classes)
    dtype = est._float_dtype()
    train = int(est.batch_size) * State(cfg, 1, dtype).nbytes()
    per_row = State(cfg, 1, dtype, apical=cfg.use_conductances and cfg.use_apical_conductance).nbytes()
    test = min(est._test_chunk(cfg) * per_row, max(per_row, est._state_bytes()))
    sizes = cfg.sizes
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    weights += sum(sizes[l + 1] * sizes[cfg.feedback_source(l) + 1] for l in range(cfg.n_layers - 1))
    return (max(train, test) + 3 * weights * dtype.itemsize) / 1e6


#: Compiles the simulator's kernels for a configuration (depth, dtype) on a throw-away copy; numba's
#: disk cache makes it about a second once the machine has compiled them, up to a minute the first time.
warm_up = compile_on_a_copy


SPEC = ModelSpec(
    name="segdend",
    label="Segregated-dendrite MLP",
    build=build,
    search_space=search_space,
    default_params=DEFAULT_PARAMS,
    description="Guerguiev et al. (2017) segregated-dendrite network, our vectorised simulator",
    warm_up=warm_up,
    options=OPTIONS,
    inactive=inactive,
    memory_mb=memory_mb,
)
