"""Typed building of config dataclasses from plain dicts: every problem is one ConfigError naming the key.

Shared by the config schemas (eval, report, ...), the task and stage Params and the plugins' own Params.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from omegaconf import OmegaConf

from orchestrator.errors import ConfigError


def build(key: str, cls: type, values: Any) -> Any:
    """Instantiate a Params dataclass from a dict, turning every problem into a ConfigError under `key`."""
    if not isinstance(values, dict):
        raise ConfigError(key, values, f"must be a mapping of {cls.__name__} fields")
    allowed = [f.name for f in fields(cls)]
    for name in values:
        if name not in allowed:
            raise ConfigError(f"{key}.{name}", values[name], "unknown key; allowed: " + ", ".join(allowed))
    converted = typed(key, cls, values)
    try:
        return cls(**converted)
    except ConfigError as err:
        raise err.under(key) from None
    except (TypeError, ValueError) as err:  # a user's Params that checks something we could not type
        raise ConfigError(key, values, f"invalid {cls.__name__}: {err}") from None


def typed(key: str, cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """`values` converted to the field types of `cls` (OmegaConf's rules: '3' -> 3 for an int field);
    a value of the wrong type is a ConfigError naming its key, for built-in and user Params alike."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), values)
    except OmegaConfBaseException as err:
        sub = getattr(err, "key", None)
        where = f"{key}.{sub}" if sub else key
        given = values.get(sub) if isinstance(sub, str) else values
        raise ConfigError(where, given, _expected(cls, sub)) from None
    out = OmegaConf.to_container(merged, resolve=True)
    return {k: out[k] for k in values}  # only what was given: dataclass defaults stay the dataclass's own


def _expected(cls: type, name: Any) -> str:
    """What a field of `cls` accepts, in words."""
    hints = {f.name: f.type for f in fields(cls)}
    hint = str(hints.get(name, "the field's type"))
    return f"must be of type {hint}"
