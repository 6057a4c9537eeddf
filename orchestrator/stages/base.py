"""The Stage contract: one compression step, its typed params, and the model domains it consumes and produces."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.errors import ConfigError

if TYPE_CHECKING:  # heavy imports stay out of the planner's import graph
    from orchestrator.tasks.base import Task

TORCH = "torch"
ONNX = "onnx"
REPORT_DIR = "report"  # a subfolder of the stage's work_dir whose files are logged with the node's MLflow run


@dataclass(frozen=True)
class Earlier:
    """A step planned before the current one: the name the user wrote, the stage run, its output domain."""

    written: str
    stage: str
    produces: str


def _no_ancestors(name: str) -> Any:
    raise LookupError(f"no earlier step {name!r} can be loaded in this context")


@dataclass
class StageContext:
    """What a running stage may use: the task (data, loss, export), a scratch dir, the teacher, a logger.

    `load(name)` returns the model of the nearest earlier step of this node's chain written as `name`
    (`baseline` is the root), e.g. a distillation teacher other than the baseline.
    """

    task: Task
    work_dir: Path
    seed: int
    teacher: Callable[[], Any]
    log: Callable[[str], None] = print
    load: Callable[[str], Any] = _no_ancestors


@dataclass
class StageOutput:
    """A stage's result: the model (a torch module, or the path of its file inside work_dir: ONNX, GGUF) + metrics."""

    model: Any
    metrics: dict[str, float] = field(default_factory=dict)


class Stage:
    """Base class. Subclasses set name, version, consumes, produces, Params and implement run().

    Bump `version` whenever a change alters what run() produces: it is part of every node key,
    so cached artifacts made by the old code are not reused. `libraries` names the distributions
    whose versions change the output; their installed versions are part of the key too.

    Planning hooks (all optional, pure: the planner imports no torch):
    - `torch_twin`: a stage that does this stage's job in the torch domain; the planner uses it where a
      torch stage comes later in the chain (an ONNX artifact has no way back to torch).
    - `written_as`: the name users write for this stage when it is another stage's twin.
    - `lowered_by_export`: its output must be exported to become real (the planner appends an export
      when the chain would otherwise end in torch).
    - `plan_params`: the node's params given every stage's params and the earlier steps of the chain.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    consumes: ClassVar[str] = TORCH
    produces: ClassVar[str] = TORCH
    Params: ClassVar[type]
    libraries: ClassVar[tuple[str, ...]] = ()  # distributions whose versions change the output (in the key)
    torch_twin: ClassVar[str | None] = None
    written_as: ClassVar[str | None] = None
    lowered_by_export: ClassVar[bool] = False

    def __init__(self, params: Any) -> None:
        self.params = params

    @classmethod
    def plan_params(cls, own: dict[str, Any], stages: dict[str, dict[str, Any]],
                    earlier: tuple[Earlier, ...], chain: str) -> dict[str, Any]:
        """The params this stage's node is keyed and run with (default: its own block, unchanged).

        Raise ConfigError for a value that cannot work at this position of `chain`.
        """
        return own

    ships: ClassVar[str] = ""  # the param that names what a variant ending here ships (a runtime stage's type)

    @classmethod
    def deployed_as(cls, params: dict[str, Any]) -> str:
        """What a variant ending in this stage ships, for its label (a runtime stage: its format and runtime,
        `Q4_K_M · llama.cpp`); '' where the chain already says it."""
        return ""

    @classmethod
    def check_task(cls, params: Any, task_cls: type) -> None:
        """Raise ConfigError, before any compute, if `params` need something the task class lacks."""

    @classmethod
    def preflight(cls, params: Any, task_cls: type, task_params: Any) -> None:
        """Raise ConfigError, before any compute, if this step cannot run on the task's own model and data
        here (a runtime not installed, a model it cannot read); may open files, unlike `check_task`."""

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        """Apply the stage to `model` (torch module or ONNX path, per `consumes`)."""
        raise NotImplementedError


class RuntimeStage(Stage):
    """Base of the stages that end a chain in an LLM runtime's own format (`gguf`, `genai`): torch in, a task with
    the LLMRuntimes capability, and before any compute the runtime installed and the model's architecture known."""

    consumes = TORCH
    made_as: ClassVar[str]  # what a refusal says the model cannot be: "written as GGUF"
    runtime: ClassVar[str]  # the runtime that measures (and a user deploys) the format, for labels

    @classmethod
    def deployed_as(cls, params: dict[str, Any]) -> str:
        """`Q4_K_M · llama.cpp`: the `ships` param's value and the runtime."""
        return f"{params.get(cls.ships, '')} · {cls.runtime}"

    @classmethod
    def runtime_missing(cls) -> str | None:
        """Why the runtime cannot run here (naming its install step), or None."""
        return None

    @classmethod
    def check_task(cls, params: Any, task_cls: type) -> None:
        from orchestrator.tasks.capabilities import LLMRuntimes, require

        require(task_cls, LLMRuntimes, "pipeline", cls.name)

    @classmethod
    def preflight(cls, params: Any, task_cls: type, task_params: Any) -> None:
        """The runtime is installed and the task's model is an architecture this format's writer knows."""
        missing = cls.runtime_missing()
        if missing:
            raise ConfigError("pipeline", cls.name, missing)
        why = task_cls.runtime_unsupported(cls.produces, task_params)
        if why:
            raise ConfigError("task.model", getattr(task_params, "model", "") or task_params.name,
                              f"cannot be {cls.made_as}: {why}")

    @staticmethod
    def float_model(model: Any) -> Any:
        """`model`, or for a fake-quantized one its grid weights in float (what the runtime's quantizer reads)."""
        from orchestrator.artifacts import simquant

        return simquant.lower(model)[0] if simquant.mode_of(model) else model
