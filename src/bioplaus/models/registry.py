"""The model registry: a model is an estimator factory plus its search space.

Each built-in model lives in a module that defines a module-level
``SPEC = ModelSpec(...)`` (or, for modules holding several models, one named
attribute, written ``"module:ATTRIBUTE"`` in ``_BUILTIN``); the registry
imports that module on first use. A
model from outside the package plugs in without touching the pipeline or the
workflow, in either of two ways:

* an entry point in the group ``bioplaus.models`` (``name = "pkg.module"`` or
  ``"pkg.module:SPEC"``) of an installed distribution, found automatically;
* a module named in the config's ``plugins`` list (or the CLI's ``--plugin``),
  imported by :func:`load_plugins`: it defines ``SPEC`` or calls
  :func:`register`.

This registry is the one list of model names: the config schema's allowed
models and each model's ``model_options`` keys are generated from it.

The pipeline drives every estimator the same way: flat float32 inputs of shape
``(n_samples, channels * height * width)`` with pixel values in [0, 1], integer
labels, and repeated ``partial_fit(X_chunk, y_chunk, classes=classes)`` calls,
each one pass over the given rows in the given order (the pipeline shuffles
and splits epochs into chunks itself, so that time limits and divergence are
checked between chunks).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any, Callable, Iterable, Mapping

from optuna.distributions import BaseDistribution

from bioplaus.errors import ConfigError

#: ``build(params, *, input_shape, n_classes, epochs, random_state, options) -> estimator``
BuildFn = Callable[..., Any]
#: ``search_space(options) -> {name: optuna distribution}`` (fixed dimension set)
SpaceFn = Callable[[Mapping[str, Any]], "dict[str, BaseDistribution]"]
#: ``memory_mb(options, input_shape) -> MB`` (options resolved; input_shape ``(c, h, w)``)
MemoryFn = Callable[[Mapping[str, Any], "tuple[int, int, int]"], float]


def compile_on_a_copy(estimator, X, y, classes):
    """A ``warm_up`` (:class:`ModelSpec`) for models with compiled kernels: one ``partial_fit`` and
    one ``predict`` on a throw-away clone, so that the kernels of this configuration (training and
    prediction) are compiled, or loaded from numba's disk cache, before a fold's clock starts."""
    from sklearn.base import clone

    clone(estimator).partial_fit(X, y, classes=classes).predict(X[:1])


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
    default_params: the published/default setting (re-evaluated by the
        noise-floor rule). It holds every key of the space, but a published
        value may lie outside the searched range (segdend's published
        non-spiking setting uses 2-step test phases and no apical
        conductance; the review's space does not): the default is what the
        authors ran, not a sample.
    options: the fixed (non-searched) settings the model accepts in the
        config's ``model_options.<name>``, as JSON-schema fragments per key
        (``type``, ``minimum``, ``enum``, ``default``, ``description``). The
        config schema is generated from them, so an unknown or ill-typed
        option stops the run before any job starts; ``build`` receives the
        options with the declared defaults filled in (:meth:`resolve_options`).
    backprop: a backpropagation baseline (the comparison table sets every
        other model against each of these).
    inactive: optional ``inactive(params) -> names``: the hyperparameters of a
        sampled point that have no effect on the model built from it (widths
        beyond ``num_layers``, a rate of a switched-off mechanism). The
        analysis keeps them out of per-parameter statistics
        (:meth:`active_params`).
    warm_up: optional ``warm_up(estimator, X, y, classes)``, run before a
        fold's clock starts: one-off costs that do not belong to the
        configuration's training time (compiling kernels for this shape) are
        paid there. It must leave ``estimator`` untouched.
    memory_mb: optional ``memory_mb(options, input_shape)``: MB the model's
        own arrays take at their peak (a training step or a test call) at the
        most memory-hungry point of its space, for images of ``input_shape``
        ``(c, h, w)`` and the resolved ``options``. A study job declares it
        per fold process on top of the process's baseline
        (:func:`bioplaus.study.resources.study_mem_mb`); None: the model's
        arrays fit the generic per-process allowance at every point.
    """

    name: str
    label: str
    build: BuildFn
    search_space: SpaceFn
    default_params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    warm_up: Callable[..., None] | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    backprop: bool = False
    inactive: Callable[[Mapping[str, Any]], Iterable[str]] | None = None
    memory_mb: MemoryFn | None = None

    def peak_memory_mb(self, options: Mapping[str, Any] | None, input_shape) -> float:
        """:attr:`memory_mb` for ``options`` (resolved here) and ``input_shape``; 0 without it."""
        if self.memory_mb is None:
            return 0.0
        return float(self.memory_mb(self.resolve_options(options), tuple(int(v) for v in input_shape)))

    def active_params(self, params: Mapping[str, Any]) -> set[str]:
        """Names of ``params`` that affect the model built from them (all but :attr:`inactive`'s)."""
        names = set(params)
        if self.inactive is None:
            return names
        return names - set(self.inactive(params))

    def options_schema(self) -> dict[str, Any]:
        """JSON schema of ``model_options.<name>``: a closed object of the declared options."""
        return {"type": ["object", "null"], "additionalProperties": False,
                "properties": {k: dict(v) for k, v in self.options.items()}}

    def resolve_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """``options`` checked against :attr:`options` (with "did you mean"), declared defaults filled in.

        Raises :class:`~bioplaus.errors.ConfigError` naming ``model_options.<name>.<key>``.
        """
        import jsonschema

        options = dict(options or {})
        where = f"model_options.{self.name}"
        for key in options:
            if key not in self.options:
                hint = difflib.get_close_matches(str(key), list(self.options), n=1)
                raise ConfigError(
                    f"{where}: unknown option {key!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; {self.name} accepts: {', '.join(self.options) or 'no options'}")
        for key, value in options.items():
            try:
                jsonschema.validate(value, dict(self.options[key]))
            except jsonschema.ValidationError as exc:
                raise ConfigError(f"{where}.{key}: {value!r}: {exc.message}") from None
        defaults = {k: v["default"] for k, v in self.options.items() if "default" in v and k not in options}
        return {**defaults, **options}


_BUILTIN: dict[str, str] = {
    "mlp": "bioplaus.models.mlp",
    "cnn": "bioplaus.models.cnn",
    "segdend": "bioplaus.models.segdend",
    "fa": "bioplaus.models.feedback_alignment:FA_SPEC",
    "dfa": "bioplaus.models.feedback_alignment:DFA_SPEC",
    "sign": "bioplaus.models.feedback_alignment:SIGN_SPEC",
    "bp-sgd": "bioplaus.models.feedback_alignment:BP_SGD_SPEC",
    "burstprop": "bioplaus.models.burstprop",
}
_REGISTERED: dict[str, ModelSpec] = {}


#: entry-point group through which installed distributions add models
ENTRY_POINT_GROUP = "bioplaus.models"


def register(spec: ModelSpec) -> ModelSpec:
    """Register a model under ``spec.name`` (overrides a built-in of that name)."""
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"register() needs a ModelSpec, got {type(spec).__name__}")
    _REGISTERED[spec.name] = spec
    return spec


def load_plugins(modules: Iterable[str]) -> list[str]:
    """Import each named module; one that defines ``SPEC`` has it registered. Returns the names added.

    A module that cannot be imported, or registers nothing, is a
    :class:`~bioplaus.errors.ConfigError` naming it (the config key is ``plugins``).
    """
    added = []
    for name in modules:
        before = set(_REGISTERED)
        try:
            module = importlib.import_module(str(name))
        except ImportError as exc:
            raise ConfigError(f"plugins: cannot import model module {name!r}: {exc}") from exc
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, ModelSpec):
            register(spec)
        new = sorted(set(_REGISTERED) - before) or ([spec.name] if isinstance(spec, ModelSpec) else [])
        if not new:
            raise ConfigError(f"plugins: module {name!r} defines no ModelSpec named SPEC and registers none")
        added += new
    return added


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_models() -> list[str]:
    """Names of all built-in, installed (entry point) and registered models."""
    return sorted(set(_BUILTIN) | set(_entry_points()) | set(_REGISTERED))


def _load_entry_point(name: str) -> ModelSpec:
    ep = _entry_points()[name]
    try:
        obj = ep.load()
    except Exception as exc:  # a broken plugin: say which
        raise ConfigError(f"model {name!r} (entry point {ep.value!r}) cannot be loaded: {exc}") from exc
    spec = obj if isinstance(obj, ModelSpec) else getattr(obj, "SPEC", None)
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"entry point {ep.value!r} of model {name!r} is not a ModelSpec or a module with SPEC")
    return register(spec)


def get_model(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        if name in _entry_points():
            return _load_entry_point(name)
        hint = difflib.get_close_matches(str(name), available_models(), n=1)
        raise ConfigError(
            f"unknown model {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; registered models: {', '.join(available_models())}"
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
