"""Graph rewrites that store weights at low precision: weight-only QDQ (int8/int4), Gemm -> MatMul, untying a
transposed (tied) LM head.

Used by `export` (realizing fake-quantized weights, `grid_tables`) and `quantize` (so that MatMulNBits
finds every linear layer); measurements of what a quantizer did live in onnx_utils.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _initializers(proto: Any) -> dict[str, Any]:
    return {t.name: t for t in proto.graph.initializer}


def drop_unused_initializers(proto: Any) -> None:
    used = {name for node in proto.graph.node for name in node.input}
    used |= {o.name for o in proto.graph.output}
    keep = [t for t in proto.graph.initializer if t.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)


def gemm_to_matmul(proto: Any) -> int:
    """Rewrite every Gemm with a constant weight as MatMul (+ Add for the bias), in place.

    ONNX Runtime's MatMulNBits quantizer only looks at MatMul nodes, and torch exports `nn.Linear` as
    Gemm, so without this an int4 quantization of such a model quantizes nothing. Returns the count.
    """
    from onnx import helper, numpy_helper

    inits, graph, done = _initializers(proto), proto.graph, 0
    for node in list(graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        weight = weight.T.copy() if attrs.get("transB", 0) else weight
        w_name, out = f"{node.input[1]}_kn", node.output[0]
        graph.initializer.append(numpy_helper.from_array(weight, w_name))
        has_bias = len(node.input) > 2 and node.input[2]
        mm = helper.make_node("MatMul", [node.input[0], w_name], [f"{out}_mm" if has_bias else out],
                              name=f"{node.name}_MatMul")
        new = [mm] + ([helper.make_node("Add", [mm.output[0], node.input[2]], [out], name=f"{node.name}_Add")]
                      if has_bias else [])
        at = list(graph.node).index(node)
        graph.node.remove(node)
        for i, n in enumerate(new):
            graph.node.insert(at + i, n)
        done += 1
    drop_unused_initializers(proto)
    return done


# Per-channel axis of the weight input (index 1) of each op: the output-channel axis torch quantizes along.
def untie_transposed(proto: Any) -> int:
    """Give every MatMul whose weight is Transpose(initializer) its own transposed initializer; returns how many.

    An LM head tied to the embedding table is exported as MatMul(x, Transpose(table)); ORT's quantizers
    look only at MatMuls on initializers and would leave the head (often the largest MatMul) in float.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    readers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    done = 0
    for node in list(proto.graph.node):
        if node.op_type != "Transpose" or node.input[0] not in inits:
            continue
        users = readers.get(node.output[0], [])
        if not users or any(u.op_type != "MatMul" or u.input[1] != node.output[0] for u in users):
            continue
        weight = numpy_helper.to_array(inits[node.input[0]])
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        proto.graph.initializer.append(numpy_helper.from_array(weight.transpose(perm).copy(), node.output[0]))
        proto.graph.node.remove(node)
        done += 1
    return done


def _weight_axis(node: Any, ndim: int) -> int | None:
    from onnx import helper

    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return 0 if attrs.get("transB", 0) else 1
    return ndim - 1 if node.op_type == "MatMul" and ndim == 2 else None


def weight_only_qdq(proto: Any, bits: int, ops: tuple[str, ...] = ("Conv", "Gemm", "MatMul")) -> Any:
    """Store the weights of `ops` (Conv/Gemm/MatMul) as int8/int4 + per-channel scales + DequantizeLinear.

    Symmetric grid, scale = max|w| / qmax per output channel: the grid `stages.simquant` trains on, so
    weights that already lie on it are stored exactly. int4 needs opset 21 (the model is converted).
    """
    import onnx

    if bits == 4:
        proto = _at_least_opset(proto, 21)
    inits, dq_nodes = _initializers(proto), []
    for node in proto.graph.node:
        name = node.input[1] if len(node.input) > 1 else ""
        if node.op_type not in ops:
            continue
        tensor = inits.pop(name, None)  # pop: a weight shared by two nodes is converted once
        if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT or len(tensor.dims) < 2:
            continue
        axis = _weight_axis(node, len(tensor.dims))
        if axis is None:
            continue
        dq_nodes.append(dequantized(proto, tensor, axis, bits))
    for i, node in enumerate(dq_nodes):  # first in the graph: every consumer comes after
        proto.graph.node.insert(i, node)
    return proto


def dequantized(proto: Any, tensor: Any, axis: int, bits: int) -> Any:
    """Replace float initializer `tensor` with its quantized form; returns the DequantizeLinear node."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.to_array(tensor)
    qmax = 127 if bits == 8 else 7
    absmax = np.moveaxis(np.abs(w), axis, 0).reshape(w.shape[axis], -1).max(1)
    scale = np.where(absmax > 0, absmax / qmax, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    name = tensor.name
    if bits == 8:
        q_tensor = numpy_helper.from_array(q, f"{name}_quantized")
    else:  # raw two-per-byte packing: int32_data would spend a varint per byte
        q_tensor = helper.make_tensor(f"{name}_quantized", TensorProto.INT4, q.shape, _pack_int4(q), raw=True)
    proto.graph.initializer.remove(tensor)
    proto.graph.initializer.extend([q_tensor, numpy_helper.from_array(scale, f"{name}_scale")])
    return helper.make_node("DequantizeLinear", [q_tensor.name, f"{name}_scale"], [name], axis=axis,
                            name=f"{name}_DequantizeLinear")


def _pack_int4(q: Any) -> bytes:
    """int4 values, two per byte, the first in the low nibble (ONNX's INT4 layout)."""
    import numpy as np

    flat = (q.flatten().astype(np.int16) & 0x0F).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).tobytes()


def _at_least_opset(proto: Any, version: int) -> Any:
    """`proto` converted to at least `version` of the default ONNX domain (and IR 10 for int4 types)."""
    import onnx

    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), version)
    if current < version:
        proto = onnx.version_converter.convert_version(proto, version)
    proto.ir_version = max(proto.ir_version, 10)
    return proto


@contextmanager
def safe_histograms() -> Iterator[None]:
    """While active, ORT's histogram calibrators (entropy, percentile) see no range numpy cannot bin.

    ORT's collector raised "Too many bins for data range", failing the whole quantization, on two kinds of
    activation: one whose values are all subnormal (|x| < 1.2e-38 in float32: a dead or constant channel
    scaled to nothing: the range is too narrow to split), and one holding float32's extremes (an attention
    mask of -3.4e38: the range's width overflows float32). Subnormals are 0 at any int8 scale, so they are
    histogrammed as exact zeros (ORT widens a zero range itself); extremes are clipped to 1/1024 of float32's
    largest value, still far beyond any scale an int8 grid could use. Every other value is untouched.
    """
    import numpy as np
    from onnxruntime.quantization import calibrate

    original = calibrate.HistogramCollector

    class Collector(original):  # type: ignore[misc,valid-type]
        def collect(self, name_to_arr: dict[str, Any]) -> Any:
            flushed = {}
            for name, arr in name_to_arr.items():
                arr = np.asarray(arr)
                if arr.dtype.kind == "f":
                    info = np.finfo(arr.dtype)
                    arr = np.where(np.abs(arr) < info.tiny, np.zeros((), arr.dtype), arr)
                    arr = np.clip(arr, -info.max / 1024, info.max / 1024).astype(arr.dtype, copy=False)
                flushed[name] = arr
            return super().collect(flushed)

    calibrate.HistogramCollector = Collector
    try:
        yield
    finally:
        calibrate.HistogramCollector = original
