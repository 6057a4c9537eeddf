"""Task registry: `task.name` in config -> Task class."""

from __future__ import annotations

from orchestrator.tasks.base import Task
from orchestrator.tasks.digits import Digits
from orchestrator.tasks.hf import HFClassification
from orchestrator.tasks.lm import LMTask
from orchestrator.tasks.smollm2 import SmolLM2
from orchestrator.tasks.tinylm import TinyLM
from orchestrator.tasks.tweets import Tweets

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (Digits, HFClassification, Tweets, LMTask, TinyLM, SmolLM2)}
# plugins (entry points, $ORCHESTRATOR_PLUGINS) are added by orchestrator.plugins.install(), not at import time:
# a plugin module imports orchestrator.tasks.base, which would otherwise re-enter this file half-done

__all__ = ["TASKS", "Task"]
