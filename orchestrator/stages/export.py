"""`export`: torch -> ONNX. The planner inserts it wherever a torch artifact feeds an ONNX stage.

Every export is checked: the ONNX model and the torch model score the same few test examples and
the largest logit difference is logged as `export_max_abs_diff`; above `max_abs_diff` the node fails,
so a broken export never reaches quantization or the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import check_choice, check_range
from orchestrator.stages.base import ONNX, TORCH, Stage, StageContext, StageOutput

CHECK_EXAMPLES = 8


@dataclass
class ExportParams:
    """opset: ONNX opset version; exporter: 'torchscript' (fast, one file) or 'dynamo' (torch.export).

    max_abs_diff: largest |ONNX - torch| logit difference accepted on a few test examples.
    """

    opset: int = 17
    exporter: str = "torchscript"
    max_abs_diff: float = 1e-3

    def __post_init__(self) -> None:
        check_range("opset", self.opset, 13, 23)
        check_choice("exporter", self.exporter, ["torchscript", "dynamo"])
        check_range("max_abs_diff", self.max_abs_diff, 0.0, None, lo_open=True)


class ExportMismatch(RuntimeError):
    """The exported ONNX model does not compute what the torch model computes."""


def export_diff(task: Any, model: Any, path: Path, examples: int = CHECK_EXAMPLES) -> float:
    """Largest |ONNX - torch| logit over the first `examples` test examples."""
    import numpy as np
    import torch

    from orchestrator.evaluate import session

    inputs, _ = next(task.batches("test", examples))
    feeds, _ = next(task.onnx_batches("test", examples))
    with torch.no_grad():
        expected = task.forward(model.eval(), inputs).float().numpy()
    got = session(path, 1).run(None, feeds)[0]
    return float(np.abs(got.astype(np.float64) - expected).max())


def check_export(task: Any, model: Any, path: Path, limit: float) -> float:
    """export_diff, raising ExportMismatch above `limit`."""
    diff = export_diff(task, model, path)
    if not diff <= limit:  # also catches NaN
        raise ExportMismatch(f"exported ONNX differs from the torch model: max |logit difference| {diff:.3g} "
                             f"> stages.export.max_abs_diff={limit:g}")
    return diff


class Export(Stage):
    """Export the incoming torch model to `model.onnx` (dynamic batch axis) and check it against torch."""

    name = "export"
    version = "1"
    consumes = TORCH
    produces = ONNX
    Params = ExportParams

    def run(self, ctx: StageContext, model: object) -> StageOutput:
        path = ctx.work_dir / "model.onnx"
        ctx.task.export(model, path, self.params.opset, self.params.exporter)
        diff = check_export(ctx.task, model, path, self.params.max_abs_diff)
        return StageOutput(path, {"export_max_abs_diff": diff})
