"""Config schemas, ConfigStore registration, recipe discovery and validation before any compute.

The root schema is a dataclass whose `stages` field is built from the stage registry, so Hydra itself
rejects an unknown key or a wrongly typed value at compose time, naming the full key. Range and choice
checks live in each Params' `__post_init__`; `validate` runs them and names the key, the value and
what is allowed.
"""

from __future__ import annotations

import os
import re
from dataclasses import MISSING, dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from omegaconf import DictConfig, OmegaConf

from orchestrator.config.effect import validate_loss
from orchestrator.config.executor import ExecutorConfig, Resources, baseline_schema, split_resources, with_resources
from orchestrator.config.search import SearchConfig, check_objectives, search_config
from orchestrator.config.typed import build
from orchestrator.errors import ConfigError, check_choice, check_range
from orchestrator.measure import targets as target_registry
from orchestrator.measure.evaluate import PAD_TO, EvalSettings

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
RECIPE_DIRS_ENV = "ORCHESTRATOR_RECIPES"  # extra recipe folders, os.pathsep-separated


@dataclass
class CacheConfig:
    """dir: the content-addressed artifact store (shared by every recipe and rerun)."""

    dir: str = ".cache/orchestrator"


@dataclass
class TrackingConfig:
    """MLflow: `uri` is the tracking store; `experiment` defaults to the recipe name."""

    enabled: bool = True
    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"
    experiment: str | None = None
    log_models: bool = True

@dataclass
class ReportConfig:
    """Constraints that pick the recommended variant (None = unconstrained).

    max_loss: the task's quality loss against the baseline, as the task declares it (orchestrator.tasks.quality):
    points of drop for classifiers (0.01 = one point of accuracy), a ratio for language models (1.1 = a
    perplexity 10% above the baseline's). max_accuracy_drop / max_perplexity_ratio: the same bound under the
    task-named key (accepted where it names the task's own loss). max_latency_ms: on latency_p50_ms at batch 1;
    max_size_mb: on model_size_mb.
    """

    max_loss: float | None = None
    max_accuracy_drop: float | None = None
    max_perplexity_ratio: float | None = None
    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    target: str = "ort"  # whose numbers the fronts, max_latency_ms and the recommendation use
    register: str | None = None  # register the recommended variant under this name in the MLflow Model Registry

    def __post_init__(self) -> None:
        if self.register is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}", self.register):
            raise ConfigError("register", self.register, "must be a model name of letters, digits, '_', '.', '-'")
        check_choice("target", self.target, target_registry.selectable())
        for key in target_registry.limits():  # the constraints the targets add (see report_schema)
            if getattr(self, key, None) is not None:
                check_range(key, getattr(self, key), 0.0, None, lo_open=True)
        check_loss_bounds(self)
        if self.max_latency_ms is not None:
            check_range("max_latency_ms", self.max_latency_ms, 0.0, None, lo_open=True)
        if self.max_size_mb is not None:
            check_range("max_size_mb", self.max_size_mb, 0.0, None, lo_open=True)


def check_loss_bounds(block: Any) -> None:
    """The quality bounds a gate or report block may hold, each in its own units (task-specific: effect.py)."""
    for key, lo, hi in (("max_loss", 0.0, None), ("max_accuracy_drop", 0.0, 1.0), ("max_perplexity_ratio", 1.0, None)):
        if getattr(block, key) is not None:
            check_range(key, getattr(block, key), lo, hi)


@dataclass
class GateConfig:
    """max_loss: a node whose quality loss against its baseline exceeds this (in the task's terms, see
    ReportConfig) stops its subtree. max_accuracy_drop / max_perplexity_ratio: the task-named forms.
    """

    max_loss: float | None = None
    max_accuracy_drop: float | None = None
    max_perplexity_ratio: float | None = None

    def __post_init__(self) -> None:
        check_loss_bounds(self)


def eval_schema() -> type:
    """The `eval` block's schema: the fields of the measurement settings (EvalSettings, their one definition)
    plus one block per registered target that has settings (`eval.<name>`), typed by the target's Settings
    dataclass, so Hydra checks a target's keys like every other."""
    hints = get_type_hints(EvalSettings)
    own = [(f.name, hints[f.name], field(default_factory=f.default_factory) if f.default_factory is not MISSING
            else field(default=f.default)) for f in fields(EvalSettings) if f.name != "blocks"]
    taken = {name for name, _, _ in own}
    blocks = []
    for target in target_registry.all_targets():
        if target.Settings is not None:
            if target.name in taken:
                raise ConfigError("eval.targets", target.name, "a target's name clashes with an eval key")
            blocks.append((target.name, target.Settings,
                           field(default_factory=target.Settings, metadata={"target_settings": target.Settings})))
    return make_dataclass("EvalConfig", [*own, *blocks])


def report_schema() -> type:
    """ReportConfig plus the constraints the registered targets add (`report.<key>` of each target Limit)."""
    limits = [(key, float | None, field(default=None)) for key in target_registry.limits()]
    return make_dataclass("ReportConfig", limits, bases=(ReportConfig,))


def stages_schema(registry: dict[str, type]) -> type:
    """A dataclass with one field per registered stage, typed by that stage's Params (+ its resources)."""
    typed_ = {"baseline": baseline_schema(),  # its resources only: the root is no registered stage
              **{name: with_resources(name, cls.Params) for name, cls in registry.items()}}
    return make_dataclass("StagesConfig", [
        (name, typed_[name], field(default_factory=typed_[name])) for name in sorted(typed_)])


def root_schema(registry: dict[str, type]) -> type:
    """The root config dataclass for a given stage registry."""
    stages, evals, report = stages_schema(registry), eval_schema(), report_schema()
    return make_dataclass("Config", [
        ("description", str, field(default="")),
        ("pipeline", list[str], field(default_factory=list)),
        ("orderings", list[list[str]], field(default_factory=list)),
        ("stages", stages, field(default_factory=stages)),
        ("sweep", dict[str, Any], field(default_factory=dict)),  # a list, or a range (config.search)
        ("search", SearchConfig, field(default_factory=SearchConfig)),
        ("task", Any, field(default=None)),
        ("seed", int, field(default=0)),
        ("dry_run", bool, field(default=False)),
        ("cache", CacheConfig, field(default_factory=CacheConfig)),
        ("tracking", TrackingConfig, field(default_factory=TrackingConfig)),
        ("eval", evals, field(default_factory=evals)),
        ("executor", ExecutorConfig, field(default_factory=ExecutorConfig)),
        ("report", report, field(default_factory=report)),
        ("gate", GateConfig, field(default_factory=GateConfig)),
    ])


def recipe_dirs() -> list[Path]:
    """recipes/ of the project, then any folders named in $ORCHESTRATOR_RECIPES."""
    extra = [Path(p) for p in os.environ.get(RECIPE_DIRS_ENV, "").split(os.pathsep) if p]
    return [ROOT / "recipes", *extra]


def discover_recipes() -> dict[str, Path]:
    """Recipe name (file stem) -> YAML path; later folders override earlier ones."""
    found: dict[str, Path] = {}
    for folder in recipe_dirs():
        for path in sorted(folder.glob("*.yaml")):
            found[path.stem] = path
    return found


BROKEN: dict[str, str] = {}  # recipe name -> why its file could not be read


def register() -> None:
    """Register the root schema and every recipe (group `recipe`, merged at the top level) with Hydra.

    A recipe file that is not valid YAML is left out (and remembered in BROKEN), so one bad file
    only stops the runs that select it.
    """
    from hydra.core.config_store import ConfigStore

    from orchestrator.config.plugins import install
    from orchestrator.stages import REGISTRY

    install()  # plugin stages are part of the schema, validated like built-in ones
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=root_schema(REGISTRY))
    for name, path in discover_recipes().items():
        try:
            node = OmegaConf.load(path)
        except Exception as err:  # yaml.YAMLError and friends: report it when the recipe is selected
            BROKEN[name] = f"recipe {name!r} ({path}) is not valid YAML: {err}"
            continue
        if not isinstance(node, DictConfig):
            BROKEN[name] = f"recipe {name!r} ({path}) must be a mapping of config keys, got {type(node).__name__}"
            continue
        cs.store(group="recipe", name=name, node=node, package="_global_")


def broken_recipe(argv: list[str]) -> str | None:
    """The error of a selected recipe whose file could not be read (`+recipe=NAME` in argv), if any."""
    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        if key == "recipe" and value in BROKEN:
            return BROKEN[value]
    return None


def validate_task(task: Any, tasks: dict[str, type]) -> Any:
    """The task's Params, or a ConfigError naming the bad key."""
    if not isinstance(task, dict) or "name" not in task:
        raise ConfigError("task", task, "select a task, e.g. task=digits (known: " + ", ".join(tasks) + ")")
    if not isinstance(task["name"], str) or task["name"] not in tasks:
        raise ConfigError("task.name", task["name"], "must be one of " + ", ".join(sorted(tasks)))
    return build("task", tasks[task["name"]].Params, task)


def validate_stages(stages: dict[str, Any], registry: dict[str, type]) -> dict[str, Any]:
    """Every stage's Params instance, range-checked (its `resources` checked apart: they key nothing)."""
    return {name: build(f"stages.{name}", registry[name].Params, split_resources(name, values)[0])
            for name, values in stages.items() if name in registry}


def stage_resources(stages: dict[str, Any]) -> dict[str, Resources]:
    """Each configured stage's worker resources (`stages.<name>.resources`), validated."""
    return {name: split_resources(name, values)[1] for name, values in stages.items() if isinstance(values, dict)}


def eval_settings(values: dict[str, Any]) -> EvalSettings:
    """The measurement settings, checked: every key typed (the schema), every range (EvalSettings), and each
    target's block built by its own Settings so a bad value names `eval.<target>.<key>`."""
    build("eval", eval_schema(), values)
    for i, name in enumerate(values.get("targets") or []):
        check_choice(f"eval.targets[{i}]", name, target_registry.selectable())
    build("eval", EvalSettings, {k: v for k, v in values.items() if k in EvalSettings.__dataclass_fields__})
    for target in target_registry.all_targets():
        if target.Settings is not None and isinstance(values.get(target.name), dict):
            build(f"eval.{target.name}", target.Settings, values[target.name])
    return EvalSettings.from_config(values)


def validate_settings(cfg: dict[str, Any]) -> None:
    """Eval, executor, report and gate settings (their schemas are typed by Hydra; ranges are checked here)."""
    evals = eval_settings(cfg.get("eval", {}))
    build("executor", ExecutorConfig, cfg.get("executor", {}))
    stage_resources(cfg.get("stages") or {})
    report = build("report", report_schema(), cfg.get("report", {}))
    if report.target not in (target_registry.REFERENCE, *evals.targets):
        raise ConfigError("report.target", report.target, f"must be a measured target: add it to eval.targets "
                          f"(now {evals.targets})")
    build("gate", GateConfig, cfg.get("gate", {}))
    check_objectives(search_config(cfg), evals.targets, {t.name: t.prefix for t in target_registry.all_targets()
                                                         if t is not target_registry.reference()})
    tracking = cfg.get("tracking") or {}
    if report.register and not (tracking.get("enabled", True) and tracking.get("log_models", True)):
        raise ConfigError("report.register", report.register, "needs the models in MLflow: tracking.enabled=true "
                          "and tracking.log_models=true")


def validate_for_task(cfg: dict[str, Any], task_cls: type) -> None:
    """Every requested target can measure this task's artifacts (each says what it refuses: e.g. the JavaScript
    harnesses a KV-cache graph); pad_to=longest needs variable-length inputs; quality bounds speak its loss."""
    from orchestrator.tasks.capabilities import VariableLength, require

    validate_loss(cfg, task_cls)
    evals = cfg.get("eval") or {}
    target_registry.check_task(task_cls, EvalSettings.from_config(evals))
    if evals.get("pad_to", PAD_TO[0]) != PAD_TO[0]:
        require(task_cls, VariableLength, "eval.pad_to", evals["pad_to"], f"only {PAD_TO[0]} applies")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A resolved plain-dict copy of an OmegaConf config (the planner works on plain data)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
