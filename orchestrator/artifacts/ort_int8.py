"""ONNX Runtime's int8 quantizers (dynamic, static QDQ) and its fp16 conversion, on model files.

What the `quantize` stage runs for modes int8 and fp16, and what accuracy control re-runs with some nodes
left in float (`exclude`). Calibration data comes from a task object passed in (its `calib` split): this
layer reads no task module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def dynamic_int8(src: Path, dst: Path, per_channel: bool, symmetric: bool, work: Path,
                 ops: list[str] | None = None, rewrite_gemm: bool = False, exclude: Sequence[str] = ()) -> int:
    """int8 dynamic quantization of `ops` (None: ORT's default set); `rewrite_gemm` first turns Gemm into
    MatMul (dynamic int8 skips Gemm: a pooler / classifier would stay float). Returns Gemms rewritten."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from orchestrator.artifacts.qdq import gemm_to_matmul, untie_transposed

    proto = onnx.load(str(src))
    rewritten = gemm_to_matmul(proto) if rewrite_gemm else 0
    if untie_transposed(proto) or rewritten:  # a tied LM head: quantized like every other MatMul
        src = work / "untied.onnx.tmp"
        onnx.save(proto, str(src))
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                     op_types_to_quantize=ops, nodes_to_exclude=list(exclude),
                     extra_options={"WeightSymmetric": symmetric})
    if src.name == "untied.onnx.tmp":
        src.unlink()
    return rewritten


class Calibration:
    """ORT CalibrationDataReader over the first `limit` samples of the task's `calib` split."""

    def __init__(self, task: Any, limit: int, batch_size: int = 32) -> None:
        self.batches, self.count = [], 0
        for feeds, _ in task.onnx_batches("calib", batch_size):
            take = min(len(next(iter(feeds.values()))), limit - self.count)
            self.batches.append({k: v[:take] for k, v in feeds.items()})
            self.count += take
            if self.count >= limit:
                break
        self.it = iter(self.batches)

    def get_next(self) -> dict | None:
        return next(self.it, None)

    def rewind(self) -> None:
        self.it = iter(self.batches)


def static_prepared(src: Path, dst: Path) -> None:
    """The graph static quantization runs on (ORT's pre-processing): node names are those of this graph."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # symbolic shape inference fails on transformer exports; ONNX shape inference is enough here
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


WEIGHT_OPS = ["MatMul", "Gemm", "Conv"]  # what static int8 quantizes: the operators that read a weight


def activation_matmuls(path: Path) -> list[str]:
    """The MatMuls with no weight (an attention's scores and its weighted sum of values)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    weights = {i.name for i in proto.graph.initializer}
    return [n.name for n in proto.graph.node if n.op_type == "MatMul" and not weights.intersection(n.input)]


def _has_tables(path: Path) -> bool:
    """Whether a Gather reads a float initializer (an embedding table)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    floats = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    return any(n.op_type == "Gather" and n.input and n.input[0] in floats for n in proto.graph.node)


def static_int8(reader: Calibration, prepped: Path, dst: Path, *, calibration: str, per_channel: bool,
                symmetric: bool, percentile: float, activations: str = "uint8", exclude: Sequence[str] = ()) -> int:
    """QDQ static int8 of a `static_prepared` graph (the QOperator format gave unloadable transformer models);
    returns the samples calibrated on.

    Only the operators that read a weight are quantized (`WEIGHT_OPS`, not the MatMuls between two
    activations; embedding tables as dynamic int8 does, a Gather of int8 rows: MiniLM 58.7 -> 23.0 MB, 0.2
    points, no slower): on MiniLM / tweets, quantizing every operator ORT can (residual adds, the attention mask,
    softmax inputs) cost 26 points of accuracy, weight operators alone 1.7, and the attention MatMuls made
    the model slower. `symmetric` is the weights'; `activations` uint8 are asymmetric (U8S8, which ONNX Runtime
    fuses into QLinearMatMul / QLinearConv on x86; with symmetric int8 activations it left half of MiniLM's
    MatMuls in float behind DequantizeLinear nodes, slower than the float model).

    Only what an integer kernel reads is rounded, and the outputs of MatMuls over sequences stay float
    (`float_readers`)."""
    import contextlib
    import io

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from orchestrator.artifacts.qdq import safe_histograms

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibration]
    from onnxruntime.quantization import quantize_dynamic

    # first the embedding tables, int8 as dynamic int8 stores them (a Gather of int8 rows, then dequantized);
    # static QDQ then calibrates the rest on that graph
    tables = dst.with_name("tables.onnx.tmp") if _has_tables(prepped) else prepped
    if tables != prepped:
        quantize_dynamic(str(prepped), str(tables), weight_type=QuantType.QInt8, op_types_to_quantize=["Gather"],
                         nodes_to_exclude=list(exclude), extra_options={"WeightSymmetric": symmetric})
    reader.rewind()
    with contextlib.redirect_stdout(io.StringIO()), safe_histograms():  # (histogram calibrators print progress)
        quantize_static(str(tables), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=method, op_types_to_quantize=WEIGHT_OPS,
                        nodes_to_exclude=[*exclude, *activation_matmuls(tables)],
                        extra_options={"ActivationSymmetric": activations == "int8", "WeightSymmetric": symmetric,
                                       "CalibPercentile": percentile})
    float_readers(dst, exclude)
    if tables != prepped:
        tables.unlink()
    return reader.count


def float_readers(path: Path, exclude: Sequence[str] = ()) -> int:
    """Rewire to the float tensor every reader of a quantized tensor that does not need it quantized;
    returns how many inputs were rewired.

    ORT puts one quantize/dequantize pair on a tensor and every reader reads the dequantized copy, so a
    transformer's residual add read its LayerNorm output through int8, and an operator accuracy control
    restored to float still read int8 inputs where it shared them with a quantized one. Those now read the
    float tensor. ORT also quantizes every quantized operator's output, which only an integer kernel with a
    quantized output needs: QLinearConv, QGemm, and a MatMul over 2-D inputs (ORT makes it and its bias add
    a Gemm). A MatMul over a sequence (3-D) runs as MatMulIntegerToFloat, so its output stays float and the
    bias add and the next layer read that. On MiniLM / tweets ORT's optimized graph keeps 5 DequantizeLinear
    nodes instead of 59, the same 38 integer kernels at the same latency.
    """
    import onnx

    from orchestrator.artifacts.qdq import drop_unused_initializers

    proto = onnx.load(str(path))
    graph, skip = proto.graph, set(exclude)
    weights = {i.name for i in graph.initializer}
    produced = {o: n for n in graph.node for o in n.output}

    def dequantized(name: str, of_weight: bool) -> str | None:
        """The float tensor behind `name` when a DequantizeLinear of a (weight / activation) tensor makes it."""
        dq = produced.get(name)
        q = produced.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if of_weight:
            return dq.input[0] if dq is not None and dq.op_type == "DequantizeLinear" and (
                dq.input[0] in weights or q is not None and q.input[0] in weights) else None
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in weights else None

    quantized = {n.name for n in graph.node if n.op_type in WEIGHT_OPS and n.name not in skip
                 and any(dequantized(i, True) for i in n.input)}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*graph.value_info, *graph.input)
             if v.type.tensor_type.HasField("shape")}
    outputs = {o for n in graph.node if n.name in quantized  # the quantized outputs an integer kernel writes
               and (n.op_type != "MatMul" or ranks.get(dequantized(n.input[0], False) or "") == 2) for o in n.output}
    rewired = 0
    for node in graph.node:
        if node.name in quantized or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k, name in enumerate(node.input):
            if (source := dequantized(name, False)) is not None and source not in outputs:
                node.input[k] = source
                rewired += 1
    if rewired:  # drop the pairs no one reads any more
        for _ in range(2):
            read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
            keep = [n for n in graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                    or any(o in read for o in n.output)]
            del graph.node[:]
            graph.node.extend(keep)
        drop_unused_initializers(proto)
        onnx.save(proto, str(path))
    return rewired


def to_fp16(src: Path, dst: Path) -> None:
    """Every float tensor in fp16, inputs and outputs kept float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: callers still feed and read float32, so the model is a drop-in replacement
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
