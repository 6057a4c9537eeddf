"""User-facing errors: raised for bad input before any compute starts, printed without a traceback."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value that is not allowed: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")

    def under(self, prefix: str) -> ConfigError:
        """The same error with its key placed under `prefix` (e.g. 'stages.prune')."""
        return ConfigError(f"{prefix}.{self.key}" if prefix else self.key, self.value, self.allowed)


class PlanError(ValueError):
    """A recipe that cannot be planned (an impossible stage order, an unknown stage)."""


def check_range(key: str, value: float, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise ConfigError unless lo <= value <= hi (open ends exclude the bound)."""
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ConfigError(key, value, f"must be in {left}{lo_s}, {hi_s}{right}")


def check_choice(key: str, value: Any, choices: list | tuple) -> None:
    """Raise ConfigError unless value is one of choices."""
    if value not in choices:
        raise ConfigError(key, value, "must be one of " + ", ".join(map(str, choices)))
