"""Measurement targets: where an artifact is measured. Adding one = its module + a line here + a test.

The one registry of targets: the built-ins below, the targets a task family provides (`Task.targets`, e.g.
the language models' speculative decoding) and plugins (entry points `orchestrator.targets`, modules in
$ORCHESTRATOR_PLUGINS), both added by orchestrator.config.plugins.install(). Everything else (the engine,
the config schema, the report, the MLflow run view) asks this module, never a target by name.

`eval.targets` lists them (default `[ort]`). The reference target `ort` is always measured (quality, the
gate and the report come from it); every other target's metrics are cached per node under its own key
(settings + runtime versions), so adding `browser` to a finished sweep measures in the browser only.
A node whose artifact is not ONNX is measured, in place of `ort`, by the target that owns its format
(`measuring`: `llamacpp` for a GGUF), under the same metric names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.measure.targets.base import SIZE, Column, Limit, Subject, Target, TargetError
from orchestrator.measure.targets.browser import BrowserTarget
from orchestrator.measure.targets.node import NodeTarget
from orchestrator.measure.targets.ort import OrtTarget
from orchestrator.measure.targets.runtimes import GenAITarget, LlamaCppTarget

GENAI_CONFIG = "genai_config.json"  # the file that names a GenAI folder as a node's model
REFERENCE = OrtTarget.name  # measured for every node, whatever eval.targets says
TARGETS: dict[str, type[Target]] = {cls.name: cls for cls in (OrtTarget, BrowserTarget, NodeTarget, LlamaCppTarget,
                                                                  GenAITarget)}


class TargetClash(ValueError):
    """Two different target classes under one name."""


def register(cls: type[Target]) -> None:
    """Add a target class (a task family's or a plugin's); another class under a taken name is refused."""
    other = TARGETS.get(cls.name)
    if other is not None and other is not cls:
        raise TargetClash(f"target {cls.name!r} ({cls.__module__}:{cls.__qualname__}) clashes with "
                          f"{other.__module__}:{other.__qualname__}: rename one of them")
    TARGETS[cls.name] = cls


def get(name: str) -> Target:
    """The target called `name`; one not registered here (a report of a plugin's numbers read back from
    MLflow without the plugin) gets the contract's defaults, so its columns and axes still resolve."""
    cls = TARGETS.get(name) or type(f"Unknown_{name}", (Target,), {"name": name})
    return cls()


def all_targets() -> list[Target]:
    """Every registered target, the reference first, in registration order."""
    return [cls() for cls in TARGETS.values()]


def reference() -> Target:
    """The reference target (`ort`): every node is measured on it."""
    return get(REFERENCE)


def format_of(path: Path) -> str:
    """The artifact format of a node's model file: torch (safetensors), gguf, genai (a GenAI folder's
    genai_config.json), else onnx."""
    return "genai" if path.name == GENAI_CONFIG else {".safetensors": "torch", ".gguf": "gguf"}.get(path.suffix, "onnx")


def measuring(fmt: str) -> Target:
    """The target whose metrics are a node's own for artifacts of format `fmt`: `ort` for ONNX (and torch,
    exported first), the target that declares `measures_format` for another (`llamacpp` for GGUF)."""
    for target in all_targets():
        if getattr(target, "measures_format", False) and fmt in target.formats:
            return target
    return reference()


def selectable() -> list[str]:
    """The names `eval.targets` and `report.target` accept."""
    return [name for name, cls in TARGETS.items() if cls.selectable]


def extra(settings: Any) -> list[Target]:
    """The targets besides the reference that `settings` asks for, in registration order."""
    return [t for t in all_targets() if t.name != REFERENCE and t.requested(settings)]


def for_node(settings: Any, task: Any, node: Subject) -> list[Target]:
    """The extra targets that measure `node`: asked for, able to read its format, and applying to it."""
    return [t for t in extra(settings) if node.format in t.formats and t.applies(task, node)]


def limits() -> dict[str, Limit]:
    """The constraints the targets add to `report`, by config key (`max_download_mb`: the browser's)."""
    return {lim.key: lim for t in all_targets() for lim in t.limits}


def check(settings: Any) -> None:
    """Before any compute: every listed target can run here (ConfigError naming eval.targets otherwise)."""
    for target in extra(settings):
        target.check(settings)


def check_task(task_cls: type, settings: Any) -> None:
    """At validation: every listed target can measure this task's artifacts (ConfigError otherwise)."""
    for target in extra(settings):
        target.check_task(task_cls, settings)


def measure_extra(cache: Any, node: Subject, task: Any, settings: Any) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics of `node` on every extra target (cached ones reused) and the error of each that failed.

    A failed target does not fail the node: its other measurements stand, and the failure is retried on
    the next run because nothing is cached for it.
    """
    metrics: dict[str, float] = {}
    errors: dict[str, str] = {}
    for target in for_node(settings, task, node):
        ekey = target.eval_key(settings, node)
        found = cache.eval_metrics(node.key, ekey)
        if found is None:
            try:
                found = target.measure(node.model, task, settings, node.root_model)
            except TargetError as err:
                errors[target.name] = str(err)
                continue
            cache.put_eval(node.key, ekey, found)
        metrics.update(found)
    return metrics, errors


def tags(settings: Any) -> dict[str, str]:
    """Runtime version tags of every listed target."""
    out: dict[str, str] = {}
    for target in extra(settings):
        out.update(target.tags(settings))
    return out


__all__ = ["REFERENCE", "SIZE", "TARGETS", "Column", "Limit", "Subject", "Target", "TargetClash", "TargetError",
           "all_targets", "check", "check_task", "extra", "for_node", "format_of", "get", "limits", "measure_extra",
           "measuring", "reference", "register", "selectable", "tags"]
