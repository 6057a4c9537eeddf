"""Task registry: `task.name` in config -> Task class."""

from __future__ import annotations

from orchestrator.tasks.base import Task
from orchestrator.tasks.digits import Digits
from orchestrator.tasks.hf.task import HFClassification
from orchestrator.tasks.hf.tweets import Tweets
from orchestrator.tasks.lm.smollm2 import SmolLM2
from orchestrator.tasks.lm.task import LMTask
from orchestrator.tasks.lm.tinylm import TinyLM

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (Digits, HFClassification, Tweets, LMTask, TinyLM, SmolLM2)}
# plugins (entry points, $ORCHESTRATOR_PLUGINS) are added by orchestrator.config.plugins.install(), not at import time:
# a plugin module imports orchestrator.tasks.base, which would otherwise re-enter this file half-done

__all__ = ["TASKS", "Task"]
