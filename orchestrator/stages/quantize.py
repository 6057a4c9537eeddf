"""`quantize`: ONNX Runtime post-training quantization of an ONNX model (dynamic int8, fp16)."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import check_choice
from orchestrator.stages.base import ONNX, Stage, StageContext, StageOutput

MODES = ["int8", "fp16"]


@dataclass
class QuantizeParams:
    """mode: 'int8' (dynamic, weights int8 + activations quantized at run time) or 'fp16'.

    per_channel: per-output-channel weight scales for int8 (better accuracy, slightly larger).
    """

    mode: str = "int8"
    per_channel: bool = False

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)


class Quantize(Stage):
    """Quantize an ONNX model and report how much of it was actually quantized."""

    name = "quantize"
    version = "1"
    consumes = ONNX
    produces = ONNX
    Params = QuantizeParams

    def run(self, ctx: StageContext, model: object) -> StageOutput:
        out = ctx.work_dir / "model.onnx"
        if self.params.mode == "fp16":
            _to_fp16(model, out)
        else:
            _dynamic_int8(model, out, self.params.per_channel)
        return StageOutput(out, {"quantized_params_frac": quantized_fraction(model, out)})


def _dynamic_int8(src: object, dst: object, per_channel: bool) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # ORT logs a "consider pre-processing" hint at WARNING on every call; it is not actionable here.
    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)


def _to_fp16(src: object, dst: object) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: callers still feed and read float32, so the model is a drop-in replacement
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def quantized_fraction(src: object, dst: object) -> float:
    """Fraction of the source's float weight elements that are stored in lower precision in `dst`."""
    import numpy as np
    import onnx

    def float_elems(path: object, types: set[int]) -> int:
        proto = onnx.load(str(path), load_external_data=True)
        return sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type in types)

    before = float_elems(src, {onnx.TensorProto.FLOAT})
    after = float_elems(dst, {onnx.TensorProto.FLOAT})
    return float(max(0.0, (before - after) / before)) if before else 0.0
