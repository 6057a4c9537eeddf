"""Settings that their schema accepts but that cannot take effect in this run: refused before any compute.

A setting silently ignored is worse than an error: the user believes a sweep ran with it. Each rule names
the key, the value and what it needs (a step in the chain, a target in eval.targets, executor=ray).
Pure: reads the resolved config dict and the planned chains, imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

from orchestrator.errors import ConfigError

RAY_ONLY = {"num_cpus": 0, "max_retries": 2}  # executor.* keys only the Ray executor reads, with their defaults
# stage settings every chain may use without naming the stage (the root's resources, the inserted export)
ALWAYS = {"baseline", "export"}


def check_effect(cfg: dict[str, Any], chain_steps: list[list[str]], pinned: frozenset[str]) -> None:
    """Refuse a stage setting no chain can use and an executor setting the chosen executor never reads.

    `chain_steps`: every name each planned chain answers to (stage, name written, twin); `pinned`: the dotted
    keys set on the command line. Recipe files may set defaults for stages they do not run (a task's config
    tunes every stage for its model), so only what the user set for this run, or sweeps, is held to it.
    """
    names = {n for steps in chain_steps for n in steps} | ALWAYS
    written = cfg.get("orderings") or [cfg.get("pipeline") or []]
    chains = ", ".join(">".join(c) or "baseline" for c in written[:6]) + (", ..." if len(written) > 6 else "")
    sweep = cfg.get("sweep") or {}
    for key in sorted(pinned | set(sweep)):
        parts = key.split(".")
        if parts[0] == "stages" and len(parts) > 2 and parts[1] not in names:
            where = f"sweep.{key}" if key in sweep and key not in pinned else key
            value = _get(cfg, parts) if key in pinned else sweep[key]
            raise ConfigError(where, value, f"no chain of this run has a {parts[1]} "
                              f"step (chains: {chains}), so it cannot take effect: add {parts[1]} to pipeline / "
                              "orderings, or drop the setting")
    executor = cfg.get("executor") or {}
    if executor.get("kind", "local") != "ray":
        for key, default in RAY_ONLY.items():
            if executor.get(key, default) != default:
                raise ConfigError(f"executor.{key}", executor[key], "is read by the Ray executor only: set "
                                  "executor=ray too, or drop it")


def _get(cfg: dict[str, Any], parts: list[str]) -> Any:
    node: Any = cfg
    for part in parts:
        node = node.get(part) if isinstance(node, dict) else None
    return node
