"""The Stage contract: one compression step, its typed params, and the model domains it consumes and produces."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # heavy imports stay out of the planner's import graph
    from orchestrator.tasks.base import Task

TORCH = "torch"
ONNX = "onnx"


@dataclass
class StageContext:
    """What a running stage may use: the task (data, loss, export), a scratch dir, the teacher, a logger."""

    task: Task
    work_dir: Path
    seed: int
    teacher: Callable[[], Any]
    log: Callable[[str], None] = print


@dataclass
class StageOutput:
    """A stage's result: the model (a torch module, or the path of an ONNX file inside work_dir) + metrics."""

    model: Any
    metrics: dict[str, float] = field(default_factory=dict)


class Stage:
    """Base class. Subclasses set name, version, consumes, produces, Params and implement run().

    Bump `version` whenever a change alters what run() produces: it is part of every node key,
    so cached artifacts made by the old code are not reused.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    consumes: ClassVar[str] = TORCH
    produces: ClassVar[str] = TORCH
    Params: ClassVar[type]

    def __init__(self, params: Any) -> None:
        self.params = params

    @classmethod
    def check_task(cls, params: Any, task_cls: type) -> None:
        """Raise ConfigError, before any compute, if `params` need something the task class lacks."""

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        """Apply the stage to `model` (torch module or ONNX path, per `consumes`)."""
        raise NotImplementedError
