"""Config schemas of where nodes run: `executor.*` and each stage's `stages.<name>.resources`.

Plain dataclasses, no runtime imports (no Ray): the config schema, and so the pure planner, reads them.
A stage's resources say what one node of that stage needs from a worker; they never change its artifact,
so they stay out of node keys (the planner builds a stage's Params without them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from orchestrator.errors import ConfigError, check_choice, check_range

KINDS = ("local", "pool", "ray")
RESOURCES_KEY = "resources"


@dataclass
class ExecutorConfig:
    """kind: local (this process; with workers > 1 the pool), pool (worker processes), ray (a Ray cluster).

    workers: processes computing independent DAG branches at once (local/pool; on Ray the cluster's
    CPUs and each stage's resources decide). torch_threads: intra-op threads of torch in each worker; 0 = the
    worker's share of the cores (local/pool: cores // workers, so the pool never oversubscribes them; Ray:
    the CPUs its stage requests); null (the default) = the task's own default (`Task.torch_threads`): 0 for
    every task but the tiny digits CNN, which trains faster on one thread (a transformer trains ~2x faster
    on 2 threads than on 1).
    address (ray): a running cluster to join (`auto`, `host:port`, `ray://host:port`); null = start a
    local Ray on this machine with `num_cpus` CPUs (0 = all cores). max_retries (ray): how often a node whose
    worker process died is resubmitted before it is reported failed.
    """

    kind: str = "local"
    workers: int = 1
    torch_threads: int | None = None
    address: str | None = None
    num_cpus: int = 0
    max_retries: int = 2

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        check_range("workers", self.workers, 1, 256)
        if self.torch_threads is not None:
            check_range("torch_threads", self.torch_threads, 0, 256)
        check_range("num_cpus", self.num_cpus, 0, 4096)
        check_range("max_retries", self.max_retries, 0, 100)
        if self.address is not None and not re.fullmatch(r"auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+", self.address):
            raise ConfigError("address", self.address, "must be auto, host:port or ray://host:port (or null: "
                              "start a local Ray)")
        if self.address is not None and self.kind != "ray":
            raise ConfigError("address", self.address, "joins a Ray cluster: set executor=ray too")


@dataclass
class Resources:
    """What one node of a stage asks of a worker (Ray): CPUs (also its torch threads when they follow the
    cores: executor.torch_threads 0, or unset for most tasks), GPUs, and memory in GB (Ray holds a node until
    that much is free)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_gb: float = 0.0

    def __post_init__(self) -> None:
        check_range("num_cpus", self.num_cpus, 0.0, 4096.0, lo_open=True)
        check_range("num_gpus", self.num_gpus, 0.0, 64.0)
        check_range("memory_gb", self.memory_gb, 0.0, 65536.0)

    def ray_options(self) -> dict[str, Any]:
        """The `.options(...)` of a Ray task."""
        out: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_gb:
            out["memory"] = int(self.memory_gb * 2**30)
        return out


def with_resources(name: str, params: type) -> type:
    """The schema of `stages.<name>`: the stage's Params plus its `resources` mapping."""
    frozen = params.__dataclass_params__.frozen
    return make_dataclass(f"{name.title().replace('_', '')}StageConfig",
                          [(RESOURCES_KEY, Resources, field(default_factory=Resources))],
                          bases=(params,), frozen=frozen)


def baseline_schema() -> type:
    """The schema of `stages.baseline`: only `resources` (the root trains or loads the task's model)."""
    return make_dataclass("BaselineStageConfig", [(RESOURCES_KEY, Resources, field(default_factory=Resources))])


def split_resources(name: str, values: dict[str, Any]) -> tuple[dict[str, Any], Resources]:
    """A stage's config without `resources` (what keys its nodes), and its Resources, validated."""
    from orchestrator.config.typed import build

    values = dict(values)
    given = values.pop(RESOURCES_KEY, None) or {}
    if not isinstance(given, dict):
        raise ConfigError(f"stages.{name}.{RESOURCES_KEY}", given, "must be a mapping like {num_cpus: 2}")
    allowed = [f.name for f in fields(Resources)]
    for key in given:
        if key not in allowed:
            raise ConfigError(f"stages.{name}.{RESOURCES_KEY}.{key}", given[key],
                              "unknown resource; allowed: " + ", ".join(allowed))
    return values, build(f"stages.{name}.{RESOURCES_KEY}", Resources, given)
