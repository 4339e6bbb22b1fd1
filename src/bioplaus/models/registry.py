"""The model registry: a model is an estimator factory plus its search space.

Each built-in model lives in a module that defines a module-level
``SPEC = ModelSpec(...)`` (or, for modules holding several models, one named
attribute, written ``"module:ATTRIBUTE"`` in ``_BUILTIN``); the registry imports
that module on first use, so a new model plugs in by adding one line to
``_BUILTIN`` (or by calling :func:`register`) without touching the pipeline.

The pipeline drives every estimator the same way: flat float32 inputs of shape
``(n_samples, channels * height * width)`` with pixel values in [0, 1], integer
labels, and repeated ``partial_fit(X_chunk, y_chunk, classes=classes)`` calls,
each one pass over the given rows in the given order (the pipeline shuffles
and splits epochs into chunks itself, so that time limits and divergence are
checked between chunks).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from optuna.distributions import BaseDistribution

from bioplaus.errors import ConfigError

#: ``build(params, *, input_shape, n_classes, epochs, random_state, options) -> estimator``
BuildFn = Callable[..., Any]
#: ``search_space(options) -> {name: optuna distribution}`` (fixed dimension set)
SpaceFn = Callable[[Mapping[str, Any]], "dict[str, BaseDistribution]"]


@dataclass(frozen=True)
class ModelSpec:
    """How the pipeline builds and searches one model.

    Attributes
    ----------
    name: registry key, used in paths (``results/<dataset>/<name>/...``).
    label: human-readable name for figures and tables.
    build: returns an *unfitted* scikit-learn classifier for one sampled
        configuration. ``params`` holds exactly the keys of the search space;
        ``input_shape`` is ``(channels, height, width)``; ``epochs`` is the
        configured number of passes (used by a plain ``fit``); ``options`` is the
        model's entry of ``model_options`` in the config (fixed, non-searched
        settings such as batch size for ``segdend``).
    search_space: the searched hyperparameters as optuna distributions.
        The set of names never depends on sampled values (the Gaussian-process
        sampler needs a fixed-dimensional space); parameters that a sampled
        value makes irrelevant (``h_l_4`` when ``num_layers`` is 2) are still
        drawn and ignored by ``build``.
    default_params: the published/default setting, as a point of the space
        (re-evaluated by the noise-floor rule).
    warm_up: optional ``warm_up(estimator, X, y, classes)``, run before a
        fold's clock starts: one-off costs that do not belong to the
        configuration's training time (compiling kernels for this shape) are
        paid there. It must leave ``estimator`` untouched.
    """

    name: str
    label: str
    build: BuildFn
    search_space: SpaceFn
    default_params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    warm_up: Callable[..., None] | None = None


_BUILTIN: dict[str, str] = {
    "mlp": "bioplaus.models.mlp",
    "cnn": "bioplaus.models.cnn",
    "segdend": "bioplaus.models.segdend",
    "fa": "bioplaus.models.feedback_alignment:FA_SPEC",
    "dfa": "bioplaus.models.feedback_alignment:DFA_SPEC",
    "sign": "bioplaus.models.feedback_alignment:SIGN_SPEC",
    "burstprop": "bioplaus.models.burstprop",
}
_REGISTERED: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Register a model under ``spec.name`` (overrides a built-in of that name)."""
    _REGISTERED[spec.name] = spec
    return spec


def available_models() -> list[str]:
    """Names of all registered and built-in models."""
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def get_model(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise ConfigError(
            f"unknown model {name!r}; registered models: {', '.join(available_models())}"
        )
    module_name, _, attribute = _BUILTIN[name].partition(":")
    attribute = attribute or "SPEC"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:  # a model whose module is not installed
        raise ConfigError(f"model {name!r} is not available: {exc}") from exc
    spec = getattr(module, attribute, None)
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"module {module_name} defines no ModelSpec named {attribute}")
    return spec
