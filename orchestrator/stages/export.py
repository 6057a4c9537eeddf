"""`export`: torch -> ONNX. The planner inserts it wherever a torch artifact feeds an ONNX stage, and
appends it to a chain that would end in a fake-quantized torch model.

A fake-quantized model (see `fakequant`) is exported as a real low-precision model: its weights, which
lie on the grid it was trained on, are stored as int8/int4 + the same per-channel scales behind
DequantizeLinear (or as fp16), so the file really shrinks and computes what the torch model computed.

Every export is checked: the plain ONNX export and the torch model score the same few test examples and
the largest logit difference is logged as `export_max_abs_diff`; above `max_abs_diff` the node fails,
so a broken export never reaches quantization or the report. (For a fake-quantized model the check runs
on the fp32 export of its grid weights, before the low-precision rewrite.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.artifacts.export_check import check_export
from orchestrator.errors import check_choice, check_range
from orchestrator.stages.base import ONNX, TORCH, Stage, StageContext, StageOutput


@dataclass
class ExportParams:
    """opset: ONNX opset version (language models: at least 18); exporter: 'torchscript' (fast, one file)
    or 'dynamo' (torch.export; language models always go through optimum's KV-cache export).

    max_abs_diff: largest |ONNX - torch| logit difference accepted on a few test examples.
    """

    opset: int = 17
    exporter: str = "torchscript"
    max_abs_diff: float = 1e-3

    def __post_init__(self) -> None:
        check_range("opset", self.opset, 13, 23)
        check_choice("exporter", self.exporter, ["torchscript", "dynamo"])
        check_range("max_abs_diff", self.max_abs_diff, 0.0, None, lo_open=True)


class Export(Stage):
    """Export the incoming torch model to `model.onnx` (dynamic batch axis) and check it against torch."""

    name = "export"
    version = "1"  # plain models export as before; fake-quantized ones did not exist before
    consumes = TORCH
    produces = ONNX
    Params = ExportParams
    libraries = ("torch", "onnx", "onnxscript", "onnxruntime", "optimum", "optimum-onnx")

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        from orchestrator.artifacts import simquant

        path = ctx.work_dir / "model.onnx"
        plain, mode = simquant.lower(model) if simquant.mode_of(model) else (model, None)
        block = simquant.block_of(model)
        ctx.task.export(plain, path, self.params.opset, self.params.exporter)
        metrics = {"export_max_abs_diff": check_export(ctx.task, plain, path, self.params.max_abs_diff)}
        if mode is not None:
            metrics.update(realize(path, mode, block))
        return StageOutput(path, metrics)


def realize(path: Path, mode: str, block: int = 0) -> dict[str, float]:
    """Rewrite the fp32 export at `path` (weights on the `mode` grid) into that precision, in place.

    Per-channel grids are stored as int8/int4 + DequantizeLinear; int4 blocks (`block`) as `quantize` int4
    stores them (MatMulNBits, GatherBlockQuantized for a tied table), whose symmetric rounding of a weight
    already on its grid gives that grid back, bit for bit; Conv weights stay per channel."""
    import onnx

    from orchestrator.artifacts.onnx_utils import quantization_report
    from orchestrator.artifacts.qdq import weight_only_qdq

    fp32 = path.with_name("fp32.onnx.tmp")
    path.rename(fp32)
    proto = onnx.load(str(fp32))
    if mode == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        proto = convert_float_to_float16(proto, keep_io_types=True)
    elif block:
        proto = weight_only_qdq(proto, 8 if mode == "int8" else 4, ops=("Conv",))
    else:
        from orchestrator.artifacts.qdq import untie_transposed

        bits = 8 if mode == "int8" else 4
        untie_transposed(proto)  # a tied LM head: its own copy, so that it is stored low-precision too
        proto = weight_only_qdq(proto, bits)
        grid_tables(proto, bits)
    onnx.save(proto, str(path))
    if block:  # MatMul weights and tables through the quantizer whose grid they lie on
        from orchestrator.artifacts.weight_only import quantize_file

        quantize_file(path, path, bits=8 if mode == "int8" else 4, block_size=block, symmetric=True)
    report = quantization_report(fp32, path)
    fp32.unlink()
    return report


def grid_tables(proto: Any, bits: int) -> int:
    """Store embedding tables (Gather on a float initializer) that already lie on the per-row `bits` grid
    in that precision; returns how many. An LM head tied to its embeddings trains the table onto the grid
    (fake quantization snaps the shared weight); a table that is not on it is left alone."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from orchestrator.artifacts.qdq import dequantized

    inits, qmax, nodes = {i.name: i for i in proto.graph.initializer}, (127 if bits == 8 else 7), []
    for node in proto.graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        if table is None or table.data_type != onnx.TensorProto.FLOAT or len(table.dims) != 2:
            continue
        w = numpy_helper.to_array(table)
        absmax = np.abs(w).max(1, keepdims=True)
        steps = w / np.where(absmax > 0, absmax / qmax, 1.0)
        if np.abs(steps - np.round(steps)).max() > 1e-3:
            continue
        inits.pop(table.name)
        nodes.append(dequantized(proto, table, 0, bits))
    for i, node in enumerate(nodes):
        proto.graph.node.insert(i, node)
    return len(nodes)
