"""`export`: torch -> ONNX. The planner inserts it wherever a torch artifact feeds an ONNX stage."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import check_choice, check_range
from orchestrator.stages.base import ONNX, TORCH, Stage, StageContext, StageOutput


@dataclass
class ExportParams:
    """opset: ONNX opset version; exporter: 'torchscript' (fast, one file) or 'dynamo' (torch.export)."""

    opset: int = 17
    exporter: str = "torchscript"

    def __post_init__(self) -> None:
        check_range("opset", self.opset, 13, 23)
        check_choice("exporter", self.exporter, ["torchscript", "dynamo"])


class Export(Stage):
    """Export the incoming torch model to `model.onnx` with a dynamic batch axis."""

    name = "export"
    version = "1"
    consumes = TORCH
    produces = ONNX
    Params = ExportParams

    def run(self, ctx: StageContext, model: object) -> StageOutput:
        path = ctx.work_dir / "model.onnx"
        ctx.task.export(model, path, self.params.opset, self.params.exporter)
        return StageOutput(path)
