"""The search space as the planner sees it: the chains and axes a search samples, a point's plan by the same
planner a grid uses, the probe of the space before any compute, and the dry run's account of it.

The grid size counts, per chain, only the axes that can change that chain (a distillation setting multiplies
the chains that distill, not a `[quantize]` chain), so it is the number of distinct leaves the grid would run.
"""

from __future__ import annotations

import copy
from typing import Any

from orchestrator.config.chains import orderings
from orchestrator.config.search import DIRECTIONS, Axis, SearchConfig, axes, grid_size, snap
from orchestrator.engine.plan import BASELINE, Keying, Plan, _names, check_chain, plan
from orchestrator.errors import ConfigError

ORDERING = "ordering"  # the trial parameter that picks the chain
TASKS_OWN = "the task's own direction"


def chain_label(chain: list[str]) -> str:
    """A chain as its categorical choice names it."""
    return ">".join(chain) or BASELINE


def check_space(cfg: dict[str, Any], pinned: frozenset[str],
                registry: dict[str, type]) -> tuple[list[list[str]], list[Axis]]:
    """The chains and the axes some chain can use; ConfigError naming the key when there is nothing to search."""
    chains = orderings(cfg)
    space = [ax for ax in axes(cfg, pinned) if any(_applies(ax.key, c, registry) for c in chains)]
    if len(chains) < 2 and all(len(ax.values() or (0, 1)) < 2 for ax in space):
        raise ConfigError("search.strategy", "optuna", "the space has a single point: give several orderings "
                          "or a sweep: axis with more than one value for a stage of the chain")
    return chains, space


def point_config(cfg: dict[str, Any], chain: list[str], values: dict[str, Any]) -> dict[str, Any]:
    """The config of one point: its chain as the only ordering, each axis swept over its one value."""
    point = copy.deepcopy(cfg)
    point["orderings"], point["pipeline"] = [list(chain)], list(chain)
    point["sweep"] = {k: [v] for k, v in values.items()}
    return point


def _applies(key: str, chain: list[str], registry: dict[str, type]) -> bool:
    """Whether axis `key` can change `chain` (a stage's setting only where the chain runs that stage)."""
    parts = key.split(".")
    names = _names(check_chain(chain, registry, ORDERING), registry)
    return parts[0] != "stages" or len(parts) < 3 or parts[1] in {*names, BASELINE}


def plan_point(cfg: dict[str, Any], chain: list[str], values: dict[str, Any], registry: dict[str, type],
               tasks: dict[str, type], pinned: frozenset[str], keying: Keying | None) -> Plan:
    """The plan of one point by the very planner a grid uses (axes a chain lacks leave it unchanged)."""
    used = {k: v for k, v in values.items() if _applies(k, chain, registry)}
    mine = frozenset(k for k in pinned if _applies(k, chain, registry))
    return plan(point_config(cfg, chain, used), registry, tasks, mine, keying)


def merge(into: Plan, other: Plan) -> None:
    """Add `other`'s nodes and variants to `into` (a leaf once)."""
    for key, node in other.nodes.items():
        into.nodes.setdefault(key, node)
    leaves = into.leaves()
    into.variants.extend(v for v in other.variants if v.leaf not in leaves)


def probe_plan(cfg: dict[str, Any], registry: dict[str, type], tasks: dict[str, type],
               pinned: frozenset[str] = frozenset(), keying: Keying | None = None) -> Plan:
    """Validate a search before any compute: every chain with every axis at each listed value and at both ends
    of each range (one axis at a time, the rest at the recipe's values); returns those points' plan (the
    preflight checks its tasks, the executor its stages)."""
    out = Plan()
    merge(out, plan({**cfg, "sweep": {}}, registry, tasks, pinned, keying))
    check_space(cfg, pinned, registry)
    for ax in axes(cfg, pinned):
        values = ax.values() if not ax.is_range else [snap(ax.low, ax.integer), snap(ax.high, ax.integer)]
        merge(out, plan({**cfg, "sweep": {ax.key: values}}, registry, tasks, pinned, keying))
    return out


def describe(cfg: dict[str, Any], search: SearchConfig, pinned: frozenset[str], registry: dict[str, type],
             storage: str, name: str) -> str:
    """The dry run's account of a search: the space, its size as a grid, the budget, the study."""
    chains, space = check_space(cfg, pinned, registry)
    size = grid_size([[ax for ax in space if _applies(ax.key, c, registry)] for c in chains])
    lines = [f"search: {search.sampler} sampler over {len(chains)} orderings x {len(space)} axes",
             f"  {ORDERING}: " + ", ".join(chain_label(c) for c in chains), *(f"  {a.describe()}" for a in space),
             f"  as a grid: {size if size is not None else 'infinite (a continuous range)'} points",
             f"  budget: {search.trials or 'unlimited'} trials"
             + (f", {search.timeout_minutes:g} minutes" if search.timeout_minutes else "")
             + f", {search.parallel} in flight",
             "  objectives: " + ", ".join(f"{m} ({d if d in DIRECTIONS else TASKS_OWN})" for m, d in search.metrics),
             f"  study: {name} in {storage}"]
    return "\n".join(lines)
