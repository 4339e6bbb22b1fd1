"""Study configuration: validation against the JSON schema, with readable errors.

The schema lives in ``workflow/schemas/config.schema.yaml``; the names it
allows are not written there but filled in from the registries when it is
loaded (:func:`complete_schema`): dataset names from :mod:`bioplaus.data`,
model names and each model's ``model_options`` from the model registry
(after importing the config's ``plugins``), sampler names from the sampler
registry. Every problem is reported at once, one line each, naming the key
and what is wrong (with a suggestion for a misspelt key); defaults from the
schema are filled in. Config files are read by :func:`load_config_file`
(YAML 1.2 floats such as ``1e300``; a syntax error names the file and line).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, MutableMapping

import yaml

from bioplaus.errors import ConfigError


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading floats as YAML 1.2 does: ``1e300`` and ``1E-3``
    (no dot) are numbers, not strings."""


_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_ConfigLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "-+0123456789.":
    _ConfigLoader.yaml_implicit_resolvers[_first] = [
        (tag, rx) for tag, rx in _ConfigLoader.yaml_implicit_resolvers.get(_first, [])
        if tag != "tag:yaml.org,2002:float"]
_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(path: str | Path) -> Any:
    """Read a YAML (or JSON) file; a syntax error is a :class:`ConfigError` naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"config file {where}: YAML syntax error: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: YAML syntax error: {exc}") from None


def load_config_file(path: str | Path) -> dict:
    """A config file as a dict (see :func:`load_yaml`); its top level must be a mapping."""
    data = load_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_schema(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def complete_schema(schema: dict) -> dict:
    """``schema`` with the registries' names filled in: datasets, models, their options, samplers."""
    from bioplaus.data import DATASETS
    from bioplaus.models import available_models, get_model
    from bioplaus.study.samplers import SAMPLERS

    props = schema["properties"]
    datasets, models = list(DATASETS), available_models()
    props["datasets"]["propertyNames"] = {"enum": datasets}
    props["mem_mb"]["propertyNames"] = {"enum": datasets}
    props["models"]["items"]["enum"] = models
    props["samplers"]["items"]["enum"] = list(SAMPLERS)
    props["model_options"]["properties"] = {m: get_model(m).options_schema() for m in models}
    return schema


def _where(error) -> str:
    return "config" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def _describe(error, schema: dict) -> str:
    where = _where(error)
    if error.validator == "additionalProperties":
        allowed = list((error.schema or {}).get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        parts = []
        for key in extra:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            parts.append(f"{where}: unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                         + (f"; allowed keys: {', '.join(allowed)}" if not hint else ""))
        return "\n".join(parts)
    if error.validator == "propertyNames":
        return f"{where}: {error.message}"
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{where}: {error.instance!r} is out of range ({error.validator} {error.validator_value})"
    if error.validator == "type":
        return f"{where}: {error.instance!r} should be of type {error.validator_value}"
    if error.validator == "required":
        return f"config: {error.message}"
    return f"{where}: {error.message}"


def _fill_defaults(config: MutableMapping[str, Any], schema: dict) -> None:
    for key, sub in (schema.get("properties") or {}).items():
        if key not in config and "default" in sub:
            config[key] = sub["default"]


def validate_config(config: MutableMapping[str, Any], schema_path: str | Path) -> MutableMapping[str, Any]:
    """Check ``config`` against the schema; fill defaults in place; raise :class:`ConfigError` listing every problem."""
    import jsonschema

    from bioplaus.models.registry import load_plugins

    plugins = config.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f"config.plugins must be a list of module names, got {plugins!r}")
    load_plugins(plugins)
    schema = complete_schema(load_schema(schema_path))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [_describe(e, schema) for e in errors]
        raise ConfigError(
            "the study configuration is invalid (keys and ranges: " + str(schema_path) + "):\n  "
            + "\n  ".join(line for line in lines if line)
        )
    _fill_defaults(config, schema)
    return config


# storage URLs: defined with the storage layer, re-exported for the workflow and the CLI
from bioplaus.study.urls import (  # noqa: E402
    STORAGE_PASSWORD_ENV,
    redact_storage,
    storage_with_password,
    storage_without_password,
)

__all__ = ["STORAGE_PASSWORD_ENV", "complete_schema", "load_schema", "redact_storage", "storage_with_password",
           "storage_without_password", "validate_config"]
