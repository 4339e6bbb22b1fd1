"""The backprop MLP of the reference study: scikit-learn's ``MLPClassifier``.

ReLU hidden layers, Adam, cross-entropy, no weight decay (as the reference's
PyTorch model). Searched: batch size, learning rate, 1-6 hidden layers of
30-500 units (``h_l_1`` .. ``h_l_6``; only the first ``num_layers`` are used).
"""

from __future__ import annotations

from optuna.distributions import FloatDistribution, IntDistribution
from sklearn.neural_network import MLPClassifier

from bioplaus.models.registry import ModelSpec

MAX_LAYERS = 6


def hidden_sizes(params) -> tuple[int, ...]:
    """Units of the first ``num_layers`` hidden layers, from ``h_l_1`` .. ``h_l_6``."""
    return tuple(int(params[f"h_l_{i}"]) for i in range(1, int(params["num_layers"]) + 1))


def search_space(options=None):
    space = {
        "batch_size": IntDistribution(10, 500),
        "learning_rate": FloatDistribution(1e-4, 0.05, log=True),
        "num_layers": IntDistribution(1, MAX_LAYERS),
    }
    for i in range(1, MAX_LAYERS + 1):
        space[f"h_l_{i}"] = IntDistribution(30, 500)
    return space


def build(params, *, input_shape, n_classes, epochs, random_state, options=None):
    options = dict(options or {})
    return MLPClassifier(
        hidden_layer_sizes=hidden_sizes(params),
        activation="relu",
        solver="adam",
        alpha=float(options.get("alpha", 0.0)),
        batch_size=int(params["batch_size"]),
        learning_rate_init=float(params["learning_rate"]),
        max_iter=int(epochs),
        # the pipeline shuffles each epoch itself and feeds whole mini-batches;
        # MLPClassifier's own shuffling would make results depend on chunking
        shuffle=False,
        random_state=random_state,
    )


DEFAULT_PARAMS = {
    "batch_size": 100,
    "learning_rate": 1e-3,
    "num_layers": 2,
    **{f"h_l_{i}": 500 if i <= 2 else 100 for i in range(1, MAX_LAYERS + 1)},
}

SPEC = ModelSpec(
    name="mlp",
    label="Backprop MLP",
    build=build,
    search_space=search_space,
    default_params=DEFAULT_PARAMS,
    description="scikit-learn MLPClassifier: ReLU, Adam, cross-entropy",
)
