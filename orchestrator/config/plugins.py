"""Your own tasks, stages and targets, from outside the package: Python entry points and $ORCHESTRATOR_PLUGINS.

Found in one place and merged into the registries (`orchestrator.tasks.TASKS`, `orchestrator.stages.REGISTRY`,
`orchestrator.measure.targets.TARGETS`):

- entry points of any installed distribution, groups `orchestrator.tasks`, `orchestrator.stages` and
  `orchestrator.targets` (`[project.entry-points."orchestrator.tasks"] wine = "wine_task:Wine"`);
- modules named in `$ORCHESTRATOR_PLUGINS` (comma-separated, importable from the current folder or
  PYTHONPATH): every `Task` / `Stage` / `Target` subclass such a module defines with a `name` is registered.

The targets a task family provides (`Task.targets`, e.g. the language models' speculative decoding) are
registered here too, so the target registry never imports a task.

The user's own environment decides which code runs, never a recipe. Worker processes (executor=pool) inherit
the environment and import the registries the same way, so a plugin task works there too. A name that clashes
with a built-in (or with another plugin) is refused naming both; a task that lacks a method of the contract
(orchestrator.tasks.base.REQUIRED) is refused naming the class and the methods.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points
from typing import Any

ENV = "ORCHESTRATOR_PLUGINS"
GROUPS = {"task": "orchestrator.tasks", "stage": "orchestrator.stages", "target": "orchestrator.targets"}


class PluginError(RuntimeError):
    """A plugin that cannot be loaded or whose name clashes; the message names both sides."""


def _where(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _add(found: dict[str, type], cls: type, kind: str, builtins: dict[str, type]) -> None:
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        return
    other = builtins.get(name) or found.get(name)
    if other is not None and other is not cls:
        side = "the built-in" if name in builtins else "the plugin"
        raise PluginError(f"plugin {kind} {name!r} ({_where(cls)}) clashes with {side} {kind} {name!r} "
                          f"({_where(other)}): rename one of them")
    lacking = cls.missing() if kind == "task" else []
    if lacking:  # refused now, not by a NotImplementedError after its baseline has trained
        raise PluginError(f"plugin task {name!r} ({_where(cls)}) does not define {', '.join(lacking)}, which "
                          "every task must (see orchestrator.tasks.base.REQUIRED)")
    found[name] = cls


def discover(kind: str, base: type, builtins: dict[str, type]) -> dict[str, type]:
    """Plugin classes of `kind` ('task', 'stage' or 'target'), subclasses of `base`, by name."""
    found: dict[str, type] = {}
    for ep in entry_points(group=GROUPS[kind]):
        try:
            cls = ep.load()
        except Exception as err:
            raise PluginError(f"entry point {ep.name} = {ep.value!r} ({GROUPS[kind]}) cannot be loaded: {err}") \
                from None
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(f"entry point {ep.name} = {ep.value!r} is not a {base.__name__} subclass")
        _add(found, cls, kind, builtins)
    for module in modules():
        for obj in list(vars(module).values()):
            defined_here = isinstance(obj, type) and obj.__module__ == module.__name__
            if defined_here and issubclass(obj, base) and obj is not base:
                _add(found, obj, kind, builtins)
    return found


_installed = False


def install() -> None:
    """Add every plugin task, stage and target, and the tasks' own targets, to the registries, once per process
    (the CLI, each pool worker)."""
    global _installed
    if _installed:
        return
    from orchestrator.measure import targets
    from orchestrator.stages import REGISTRY
    from orchestrator.stages.base import Stage
    from orchestrator.tasks import TASKS
    from orchestrator.tasks.base import Task

    tasks, stages = discover("task", Task, TASKS), discover("stage", Stage, REGISTRY)
    check_capabilities(tasks)
    TASKS.update(tasks)
    REGISTRY.update(stages)
    for task in TASKS.values():
        for cls in task.targets:
            _register_target(cls, f"task {task.name!r}")
    for cls in discover("target", targets.Target, dict(targets.TARGETS)).values():
        _register_target(cls, "plugin")
    _installed = True


def check_capabilities(tasks: dict[str, type]) -> None:
    """Refuse a plugin task that declares a capability but leaves one of its methods unimplemented."""
    from orchestrator.tasks.capabilities import missing

    for name, cls in tasks.items():
        if gaps := missing(cls):
            raise PluginError(f"plugin task {name!r} ({_where(cls)}) declares capabilities it does not implement: "
                              f"define {', '.join(gaps)} (see orchestrator/tasks/capabilities.py)")


def _register_target(cls: type, source: str) -> None:
    from orchestrator.measure import targets

    try:
        targets.register(cls)
    except targets.TargetClash as err:
        raise PluginError(f"{source}: {err}") from None


def modules() -> list[Any]:
    """The modules named in $ORCHESTRATOR_PLUGINS, imported (the current folder is importable)."""
    names = [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]
    if names and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    out = []
    for name in names:
        try:
            out.append(importlib.import_module(name))
        except Exception as err:
            raise PluginError(f"{ENV}={os.environ[ENV]!r}: module {name!r} cannot be imported ({err})") from None
    return out
