"""The `search:` block and the search space: how a recipe's `orderings` x `sweep:` axes are walked.

`strategy: grid` (the default) is the cartesian product the planner has always expanded. `strategy: optuna`
samples points of the same space under a budget (`trials` and/or `timeout_minutes`), toward `objectives`.
A sweep axis is a list of values (categorical) or a range `{low, high, step}` / `{low, high, log: true}`; a grid
enumerates a range only when it has a `step`. Everything here is plain data: no Optuna import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import ConfigError, check_choice

STRATEGIES = ("grid", "optuna")
SAMPLERS = ("tpe", "nsga2", "random")
QUALITY = "quality"  # an objective that means the task's own quality metric, in its own direction
DIRECTIONS = ("minimize", "maximize")
RANGE_KEYS = frozenset({"low", "high", "step", "log"})
STORAGES = ("sqlite:///", "postgresql", "mysql")  # the RDB URLs Optuna's storage takes (SQLAlchemy's)


@dataclass
class SearchConfig:
    """How the space is walked (see the module doc); `parallel`: trials planned and computed together;
    `storage`: the study's database URL (None: beside a SQLite tracking store, else in the cache folder)."""

    strategy: str = "grid"
    trials: int | None = None
    timeout_minutes: float | None = None
    sampler: str = "tpe"
    seed: int | None = None
    objectives: list[Any] = field(default_factory=lambda: [{QUALITY: "auto"}, {"latency_p50_ms": "minimize"}])
    parallel: int = 1
    storage: str | None = None

    def __post_init__(self) -> None:
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("sampler", self.sampler, SAMPLERS)
        if self.parallel < 1:
            raise ConfigError("parallel", self.parallel, "must be at least 1 (trials in flight)")
        if self.trials is not None and self.trials < 0:
            raise ConfigError("trials", self.trials, "must be >= 0")
        if self.timeout_minutes is not None and self.timeout_minutes <= 0:
            raise ConfigError("timeout_minutes", self.timeout_minutes, "must be > 0")
        if self.strategy == "optuna" and not self.trials and self.timeout_minutes is None:
            raise ConfigError("trials", self.trials, "a search needs a budget: trials > 0 and/or timeout_minutes")
        if self.storage is not None and not str(self.storage).startswith(STORAGES):
            raise ConfigError("storage", self.storage, "must be a database URL: sqlite:///PATH, "
                              "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB (team mode) or mysql://...")
        if not self.objectives:
            raise ConfigError("objectives", self.objectives, "name at least one metric with a direction")
        for i, item in enumerate(self.objectives):
            if not isinstance(item, dict) or len(item) != 1:
                raise ConfigError(f"objectives[{i}]", item, "must be one {metric: minimize|maximize}")
            (metric, direction), = item.items()
            if direction not in DIRECTIONS and not (metric == QUALITY and direction in (None, "auto")):
                raise ConfigError(f"objectives[{i}].{metric}", direction, "must be minimize or maximize")

    @property
    def metrics(self) -> list[tuple[str, str | None]]:
        """(metric, direction) per objective, in order (`quality`'s direction may be None: the task's own)."""
        return [next(iter(o.items())) for o in self.objectives]


@dataclass(frozen=True)
class Axis:
    """One dimension of the space: `choices` (categorical), or a float/int range."""

    key: str
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    @property
    def is_range(self) -> bool:
        """Whether it is a range (else a list of choices)."""
        return not self.choices

    @property
    def integer(self) -> bool:
        """A range of whole numbers (low, high and step all ints)."""
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step or 1))

    def values(self) -> list[Any] | None:
        """Every value, when finite (a list, or a range with a step); None for a continuous range."""
        if not self.is_range:
            return list(self.choices)
        if self.step is None:
            return None
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [snap(self.low + i * self.step, self.integer) for i in range(count)]

    def describe(self) -> str:
        """The axis in words, for the dry run."""
        if not self.is_range:
            return f"{self.key}: {list(self.choices)}"
        how = f"step {self.step:g}" if self.step is not None else "log scale" if self.log else "continuous"
        return f"{self.key}: {self.low:g} .. {self.high:g} ({how})"


def snap(value: float, integer: bool = False) -> Any:
    """A sampled or enumerated value in the form its node key hashes (no 0.6000000000000001)."""
    return int(round(value)) if integer else round(float(value), 10)


def axis(key: str, spec: Any) -> Axis:
    """The axis `sweep.<key>` declares; ConfigError naming it when it is empty or a bad range."""
    where = f"sweep.{key}"
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(where, spec, "must be a non-empty list of values, or a range {low, high, step|log}")
        return Axis(key, tuple(spec))
    if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) or set(spec) - RANGE_KEYS:
        raise ConfigError(where, spec, "must be a non-empty list of values, or a range {low, high, step|log}")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), bool(spec.get("log", False))
    for name, value in (("low", low), ("high", high), ("step", step)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{where}.{name}", value, "must be a number")
    if low > high:
        raise ConfigError(f"{where}.low", low, f"must not exceed high={high}")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}.step", step, "must be > 0")
    if log and (step is not None or low <= 0):
        raise ConfigError(f"{where}.log", log, "a log range needs low > 0 and no step")
    return Axis(key, (), low, high, step, log)


def axes(cfg: dict[str, Any], pinned: frozenset[str] = frozenset()) -> list[Axis]:
    """Every swept axis of `cfg`, in declaration order (keys set on the command line are not swept)."""
    return [axis(k, v) for k, v in (cfg.get("sweep") or {}).items() if k not in pinned]


def grid_values(cfg: dict[str, Any], pinned: frozenset[str] = frozenset()) -> dict[str, list[Any]]:
    """The grid's values per axis; a range without `step` cannot be enumerated, so a grid refuses it."""
    out = {}
    for ax in axes(cfg, pinned):
        values = ax.values()
        if values is None:
            raise ConfigError(f"sweep.{ax.key}", {"low": ax.low, "high": ax.high},
                              "a grid enumerates a range only with a step: add step, or search it "
                              "(search.strategy=optuna)")
        out[ax.key] = values
    return out


def search_config(cfg: dict[str, Any]) -> SearchConfig:
    """The typed `search` block (ConfigError naming `search.<key>`)."""
    from orchestrator.config.typed import build

    return build("search", SearchConfig, cfg.get("search") or {})


def grid_size(per_chain: list[list[Axis]]) -> int | None:
    """How many leaves the full grid has: per chain, the product of the axes that can change it, summed;
    None where a range is continuous."""
    total = 0
    for space in per_chain:
        points = 1
        for ax in space:
            values = ax.values()
            if values is None:
                return None
            points *= len(values)
        total += points
    return total


def check_objectives(search: SearchConfig, targets: list[str], selectable: dict[str, str]) -> None:
    """Refuse an objective that no requested target measures: a target's metric (its prefix) needs it in
    eval.targets. `selectable`: target name -> its metric prefix (the reference target has none)."""
    for i, (metric, _) in enumerate(search.metrics):
        for name, prefix in selectable.items():
            if prefix and metric.startswith(prefix) and name not in targets:
                raise ConfigError(f"search.objectives[{i}]", metric, f"no target measures it: add {name} to "
                                  f"eval.targets (now {targets})")
