"""Task registry: `task.name` in config -> Task class."""

from __future__ import annotations

from orchestrator.tasks.base import Task
from orchestrator.tasks.digits import Digits

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (Digits,)}

__all__ = ["TASKS", "Task"]
