"""`export`: torch -> ONNX. The planner inserts it wherever a torch artifact feeds an ONNX stage, and
appends it to a chain that would end in a fake-quantized torch model.

A fake-quantized model (see `fakequant`) is exported as a real low-precision model: its weights, which
lie on the grid it was trained on, are stored as int8/int4 + the same per-channel scales behind
DequantizeLinear (or as fp16), so the file really shrinks and computes what the torch model computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    version = "1"  # plain models export as before; fake-quantized ones did not exist before
    consumes = TORCH
    produces = ONNX
    Params = ExportParams

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        from orchestrator.stages import simquant

        path = ctx.work_dir / "model.onnx"
        plain, mode = simquant.lower(model) if simquant.mode_of(model) else (model, None)
        ctx.task.export(plain, path, self.params.opset, self.params.exporter)
        if mode is None:
            return StageOutput(path)
        return StageOutput(path, realize(path, mode))


def realize(path: Path, mode: str) -> dict[str, float]:
    """Rewrite the fp32 export at `path` (weights on the `mode` grid) into that precision, in place."""
    import onnx

    from orchestrator.onnx_utils import quantization_report, weight_only_qdq

    fp32 = path.with_name("fp32.onnx.tmp")
    path.rename(fp32)
    proto = onnx.load(str(fp32))
    if mode == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        proto = convert_float_to_float16(proto, keep_io_types=True)
    else:
        proto = weight_only_qdq(proto, 8 if mode == "int8" else 4)
    onnx.save(proto, str(path))
    report = quantization_report(fp32, path)
    fp32.unlink()
    return report
