"""What a recipe asks to run, read from its config: the sweep's points and the chains (`orderings` or the one
`pipeline`). The planner (orchestrator.engine.plan) turns them into nodes."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from orchestrator.config.search import grid_values
from orchestrator.errors import ConfigError


def set_dotted(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """cfg['a']['b']['c'] = value for 'a.b.c'; the path must already exist."""
    *path, last = dotted.split(".")
    node = cfg
    for i, part in enumerate(path):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"sweep.{dotted}", value, f"no such key {'.'.join(path[:i + 1])!r} in the config")
        node = node[part]
    if not isinstance(node, dict) or last not in node:
        raise ConfigError(f"sweep.{dotted}", value, f"no such key {dotted!r} in the config")
    node[last] = value


def expand_sweep(cfg: dict[str, Any], pinned: frozenset[str] = frozenset()) -> list[tuple[dict, dict]]:
    """(overrides, config) per point of the sweep's cartesian product, in declaration order.

    Keys in `pinned` (set explicitly on the command line) are not swept: the explicit value wins.
    An axis is a list, or a range with a `step` (orchestrator.config.search).
    """
    sweep = grid_values(cfg, pinned)  # a range with a step is enumerated
    keys = list(sweep)
    points = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        variant = copy.deepcopy(cfg)
        for key, value in zip(keys, combo, strict=True):
            set_dotted(variant, key, value)
        points.append((dict(zip(keys, combo, strict=True)), variant))
    return points


def _chains(cfg: dict[str, Any]) -> list[Any]:
    return cfg.get("orderings") or [cfg.get("pipeline") or []]


def orderings(cfg: dict[str, Any]) -> list[list[str]]:
    """The chains to run: `orderings` if given, else the single `pipeline`."""
    return [list(c) for c in _chains(cfg)]


def named_stages(cfg: dict[str, Any]) -> set[str]:
    """Every stage name the chains mention, read before validation (so malformed entries are skipped, not fatal)."""
    return {s for c in _chains(cfg) if isinstance(c, list) for s in c if isinstance(s, str)}
