"""Study configuration: validation against the JSON schema, with readable errors.

The schema lives in ``workflow/schemas/config.schema.yaml``. Every problem is
reported at once, one line each, naming the key and what is wrong
(with a suggestion for a misspelt key); defaults from the schema are filled in.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, MutableMapping

import yaml

from bioplaus.errors import ConfigError


def load_schema(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


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

    schema = load_schema(schema_path)
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
