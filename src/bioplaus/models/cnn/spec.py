"""The backprop CNN as a registered model: the reference study's search space, default and builder.

``SPEC`` registers :class:`~.estimator.CNNClassifier` as ``cnn``. The space
keeps the reference's ranges (batch size, log learning rate, 1-5 blocks of
3-64 channels with kernels 2-10, shared stride and padding); a geometry that
does not fit the image is an *invalid* point, checked by
:func:`~.estimator.check_params` before anything is built.
"""

from __future__ import annotations

from optuna.distributions import FloatDistribution, IntDistribution

from bioplaus.models.cnn.estimator import MAX_BLOCKS, CNNClassifier, params_to_estimator_args
from bioplaus.models.architecture import unused_widths
from bioplaus.models.registry import ModelSpec




def search_space(options=None):
    """The reference's CNN search space (fixed key set; only the first
    ``num_layers`` of ``ch_*``/``k_*`` are used)."""
    space = {
        "batch_size": IntDistribution(10, 500),
        "learning_rate": FloatDistribution(1e-4, 0.05, log=True),
        "num_layers": IntDistribution(1, MAX_BLOCKS),
    }
    for i in range(1, MAX_BLOCKS + 1):
        space[f"ch_{i}"] = IntDistribution(3, 64)
    for i in range(1, MAX_BLOCKS + 1):
        space[f"k_{i}"] = IntDistribution(2, 10)
    space["stride"] = IntDistribution(1, 3)
    space["padding"] = IntDistribution(1, 3)
    return space


#: ``model_options.cnn``: estimator settings passed through (JSON-schema fragments; see ModelSpec.options).
OPTIONS = {
    "bn_momentum": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                    "description": "batch-norm running-statistics momentum"},
    "predict_batch_size": {"type": ["integer", "null"], "minimum": 1,
                           "description": "images per forward pass when predicting"},
    "n_jobs": {"type": ["integer", "null"], "minimum": -1, "not": {"const": 0},
               "description": "threads per fit (-1: all cores)"},
    "max_patch_mb": {"type": "number", "exclusiveMinimum": 0,
                     "description": "im2col buffer budget per thread (MB)"},
}


def build(params, *, input_shape, n_classes, epochs, random_state, options=None):
    """An unfitted :class:`CNNClassifier` for one search-space point, reading
    flat rows of images ``input_shape`` = (c, h, w). An invalid geometry is
    raised at fit time (check it earlier with :func:`check_params`)."""
    options = SPEC.resolve_options(options)
    return CNNClassifier(
        **params_to_estimator_args(params),
        epochs=int(epochs),
        input_shape=tuple(int(v) for v in input_shape),
        random_state=random_state,
        **options,
    )


def inactive(params):
    """Channels and kernel sizes of blocks beyond ``num_layers``."""
    return unused_widths(params, ("ch_", "k_"), MAX_BLOCKS)


DEFAULT_PARAMS = {
    "batch_size": 100,
    "learning_rate": 1e-3,
    "num_layers": 2,
    **{f"ch_{i}": c for i, c in enumerate((16, 32, 32, 32, 32), start=1)},
    **{f"k_{i}": 5 for i in range(1, MAX_BLOCKS + 1)},
    "stride": 1,
    "padding": 2,
}

SPEC = ModelSpec(
    name="cnn",
    label="Backprop CNN",
    build=build,
    search_space=search_space,
    default_params=DEFAULT_PARAMS,
    description="NumPy CNN: conv -> batch norm -> ReLU -> 2x2 max pool blocks, linear, Adam",
    options=OPTIONS,
    backprop=True,
    inactive=inactive,
)
