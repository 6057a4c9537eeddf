"""Your own tasks and stages, from outside the package: Python entry points and $ORCHESTRATOR_PLUGINS.

Found in one place and merged into the registries (`orchestrator.tasks.TASKS`, `orchestrator.stages.REGISTRY`):

- entry points of any installed distribution, groups `orchestrator.tasks` and `orchestrator.stages`
  (`[project.entry-points."orchestrator.tasks"] wine = "wine_task:Wine"`);
- modules named in `$ORCHESTRATOR_PLUGINS` (comma-separated, importable from the current folder or
  PYTHONPATH): every `Task` / `Stage` subclass such a module defines with a `name` is registered.

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
GROUPS = {"task": "orchestrator.tasks", "stage": "orchestrator.stages"}


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
    """Plugin classes of `kind` ('task' or 'stage'), subclasses of `base`, by name."""
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
    """Add every plugin task and stage to the registries, once per process (the CLI, each pool worker)."""
    global _installed
    if _installed:
        return
    from orchestrator.stages import REGISTRY
    from orchestrator.stages.base import Stage
    from orchestrator.tasks import TASKS
    from orchestrator.tasks.base import Task

    tasks, stages = discover("task", Task, TASKS), discover("stage", Stage, REGISTRY)
    TASKS.update(tasks)
    REGISTRY.update(stages)
    _installed = True


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
