"""The backprop CNN as a registered model: the reference study's search space, default and builder.

``SPEC`` registers :class:`~.estimator.CNNClassifier` as ``cnn``. The space
keeps the reference's ranges (batch size, log learning rate, 1-5 blocks of
3-64 channels with kernels 2-10, shared stride and padding); a geometry that
does not fit the image is an *invalid* point, checked by
:func:`~.estimator.check_params` before anything is built.
"""

from __future__ import annotations

import os

from optuna.distributions import FloatDistribution, IntDistribution

from bioplaus.errors import InvalidConfigurationError
from bioplaus.models.cnn._network import training_step_nbytes
from bioplaus.models.cnn.estimator import MAX_BLOCKS, CNNClassifier, check_geometry, params_to_estimator_args
from bioplaus.models.architecture import unused_widths
from bioplaus.models.registry import ModelSpec, compile_on_a_copy




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


def memory_mb(options, input_shape, n_classes=10):
    """Peak MB of the CNN's arrays at the most memory-hungry point of :func:`search_space`.

    The largest batch and the widest blocks, with every uniform kernel size,
    stride, padding and depth of the space that fits ``input_shape``: the
    larger of a training step (:func:`~._network.training_step_nbytes`, one
    shard, plus a patch buffer and a patch-gradient chunk per further thread of
    ``n_jobs``) and a test call (a prediction chunk keeps its patches and
    twice its outputs within ``max_patch_mb``; or ``predict_batch_size``
    images). Non-uniform kernels are not searched: a layer's maps, which
    dominate, are largest with the smallest kernel, and its patches are
    bounded by the budget whatever the kernel. ``n_classes`` only sizes the
    linear layer (kilobytes)."""
    est = CNNClassifier(**dict(options or {}))  # the estimator's defaults for options not given
    budget = est._patch_bytes()
    threads = 1 if est.n_jobs is None else (os.cpu_count() or 1) if est.n_jobs == -1 else int(est.n_jobs)
    space = search_space(options)
    batch = space["batch_size"].high
    width = max(space[f"ch_{i}"].high for i in range(1, MAX_BLOCKS + 1))
    kernels = range(min(space[f"k_{i}"].low for i in range(1, MAX_BLOCKS + 1)),
                    max(space[f"k_{i}"].high for i in range(1, MAX_BLOCKS + 1)) + 1)
    c, h, w = input_shape
    peak = 0
    for k in kernels:
        for stride in range(space["stride"].low, space["stride"].high + 1):
            for padding in range(space["padding"].low, space["padding"].high + 1):
                for depth in range(space["num_layers"].low, space["num_layers"].high + 1):
                    try:
                        shapes = check_geometry(input_shape, (width,) * depth, (k,) * depth, stride, padding)
                    except InvalidConfigurationError:
                        break  # deeper does not fit either
                    train = training_step_nbytes(input_shape, (width,) * depth, (k,) * depth, stride, padding,
                                                 batch, n_classes, budget) + 2 * budget * (threads - 1)
                    test = 2 * budget
                    if est.predict_batch_size is not None:  # a fixed chunk: its patches and outputs
                        per_image, (ci, hi, wi) = 0, (c, h, w)
                        for (hp, wp, f) in shapes:
                            ho, wo = (hi + 2 * padding - k) // stride + 1, (wi + 2 * padding - k) // stride + 1
                            per_image = max(per_image, 4 * ho * wo * (k * k * ci + 2 * f))
                            ci, hi, wi = f, hp, wp
                        test = int(est.predict_batch_size) * per_image
                    peak = max(peak, train, test)
    return peak / 1e6


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
    warm_up=compile_on_a_copy,  # the numba kernels of im2col, pooling and batch norm (_kernels)
    backprop=True,
    inactive=inactive,
    memory_mb=memory_mb,
)
