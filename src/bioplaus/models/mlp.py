"""The backprop MLP of the reference study: scikit-learn's ``MLPClassifier``.

ReLU hidden layers, Adam, cross-entropy, no weight decay (as the reference's
PyTorch model). Searched: batch size, learning rate, 1-6 hidden layers of
30-500 units (``h_l_1`` .. ``h_l_6``; only the first ``num_layers`` are used).

The estimator is :class:`OneThreadMLPClassifier`, ``MLPClassifier`` whose
calls run with BLAS held to one thread (:mod:`bioplaus.models._threads`), so
that its numbers do not depend on the caller's thread count.
"""

from __future__ import annotations

from optuna.distributions import FloatDistribution, IntDistribution
from sklearn.neural_network import MLPClassifier
from sklearn.utils.metaestimators import available_if

from bioplaus.models._threads import holds_one_blas_thread
from bioplaus.models.architecture import default_widths, hidden_layer_space, hidden_sizes, unused_widths
from bioplaus.models.registry import ModelSpec


class OneThreadMLPClassifier(MLPClassifier):
    """``MLPClassifier`` (same parameters, same numbers as it gives at one BLAS thread) whose
    ``fit``, ``partial_fit``, ``predict``, ``predict_proba`` and ``predict_log_proba`` run with
    BLAS held to one thread."""

    @holds_one_blas_thread
    def fit(self, X, y, *args, **kwargs):
        return super().fit(X, y, *args, **kwargs)

    @available_if(lambda est: est._check_solver())  # as MLPClassifier's: not for lbfgs
    @holds_one_blas_thread
    def partial_fit(self, X, y, *args, **kwargs):
        return super().partial_fit(X, y, *args, **kwargs)

    @holds_one_blas_thread
    def predict(self, X):
        return super().predict(X)

    @holds_one_blas_thread
    def predict_proba(self, X):
        return super().predict_proba(X)

    @holds_one_blas_thread
    def predict_log_proba(self, X):
        return super().predict_log_proba(X)


def search_space(options=None):
    space = {
        "batch_size": IntDistribution(10, 500),
        "learning_rate": FloatDistribution(1e-4, 0.05, log=True),
    }
    space.update(hidden_layer_space())
    return space


#: ``model_options.mlp``: fixed settings (JSON-schema fragments; see ModelSpec.options).
OPTIONS = {
    "alpha": {"type": "number", "minimum": 0, "default": 0.0,
              "description": "L2 penalty (0: no weight decay, as the reference's PyTorch model)"},
}


def build(params, *, input_shape, n_classes, epochs, random_state, options=None):
    options = SPEC.resolve_options(options)
    return OneThreadMLPClassifier(
        hidden_layer_sizes=hidden_sizes(params),
        activation="relu",
        solver="adam",
        alpha=float(options["alpha"]),
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
    **default_widths(500, 2, 100),
}

SPEC = ModelSpec(
    name="mlp",
    label="Backprop MLP",
    build=build,
    search_space=search_space,
    default_params=DEFAULT_PARAMS,
    description="scikit-learn MLPClassifier: ReLU, Adam, cross-entropy",
    options=OPTIONS,
    backprop=True,
    inactive=unused_widths,
)
