"""The validated run: one typed, frozen `Settings` that everything past the CLI reads.

`settle` turns the resolved config (a plain dict from Hydra) into it once, after the planner validated the
whole config; the sweep, the executors' jobs, the tracker and the report then read typed fields and never
index the raw dict. The raw dict stays only where it is the point: the planner expands the recipe part of
it (pipeline, orderings, stages, sweep, task: dotted keys over plain data), and the parent run logs it as
`config.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from orchestrator.config.effect import max_loss
from orchestrator.config.executor import ExecutorConfig, Resources, split_resources
from orchestrator.config.schema import (
    CacheConfig,
    GateConfig,
    TrackingConfig,
    eval_settings,
    report_schema,
    stage_resources,
)
from orchestrator.config.search import SearchConfig, search_config
from orchestrator.config.typed import build
from orchestrator.measure.evaluate import EvalSettings


@dataclass(frozen=True)
class Settings:
    """Every setting of one invocation, typed (see conf/config.yaml for what each means)."""

    recipe: str | None
    task: str  # the task's name (its class: orchestrator.tasks.TASKS)
    seed: int
    dry_run: bool
    cache: CacheConfig
    tracking: TrackingConfig
    eval: EvalSettings
    executor: ExecutorConfig
    report: Any  # config.schema.ReportConfig plus the limits the targets add
    gate: GateConfig
    search: SearchConfig  # how the space is walked: the grid, or a budgeted search
    resources: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # stage -> Resources
    export: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # how torch nodes are exported
    data: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # the resolved config, as given

    @property
    def title(self) -> str:
        """The recipe's name, or `adhoc` for a pipeline given on the command line."""
        return self.recipe or "adhoc"

    @property
    def experiment(self) -> str:
        """The MLflow experiment: tracking.experiment, else the recipe's name."""
        return self.tracking.experiment or self.title

    def gate_loss(self, quality: Any) -> float | None:
        """gate.max_loss in the task's terms (the task-named key where it names this task's loss)."""
        return max_loss(vars(self.gate), quality)

    def resources_of(self, stage: str) -> Resources:
        """What a node of `stage` asks of a worker (`stages.<stage>.resources`; the default elsewhere)."""
        return self.resources.get(stage, Resources())


def settle(data: dict[str, Any], recipe: str | None) -> Settings:
    """The typed settings of a resolved config the planner has validated (so nothing here raises for a
    value it already checked; a ConfigError from here still names its key)."""
    stages = data.get("stages") or {}
    return Settings(
        recipe=recipe, task=str((data.get("task") or {}).get("name", "")), seed=int(data.get("seed", 0)),
        dry_run=bool(data.get("dry_run", False)),
        cache=build("cache", CacheConfig, data.get("cache") or {}),
        tracking=build("tracking", TrackingConfig, data.get("tracking") or {}),
        eval=eval_settings(data.get("eval") or {}),
        executor=build("executor", ExecutorConfig, data.get("executor") or {}),
        report=build("report", report_schema(), data.get("report") or {}),
        gate=build("gate", GateConfig, data.get("gate") or {}),
        search=search_config(data),
        resources=MappingProxyType(stage_resources(stages)),
        export=MappingProxyType(split_resources("export", stages.get("export", {}))[0]),
        data=MappingProxyType(data))
