"""ONNX helpers shared by stages and evaluation: export, on-disk size, parameter counts."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any


def torch_export(model: Any, example_inputs: tuple, path: Path, input_names: list[str],
                 output_names: list[str], opset: int, exporter: str) -> None:
    """Export a torch module to ONNX with a dynamic batch axis on every input and output.

    `exporter` is 'torchscript' (fast, single file) or 'dynamo' (torch.export based, needs onnxscript).
    """
    import torch

    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch")
            shapes = tuple({0: batch} for _ in example_inputs)
            torch.onnx.export(model, example_inputs, str(path), input_names=input_names,
                              output_names=output_names, opset_version=opset, dynamo=True,
                              dynamic_shapes=shapes, external_data=False)
        else:
            axes = {n: {0: "batch"} for n in [*input_names, *output_names]}
            torch.onnx.export(model, example_inputs, str(path), input_names=input_names,
                              output_names=output_names, opset_version=opset, dynamo=False,
                              dynamic_axes=axes)


def model_files(path: Path) -> list[Path]:
    """The ONNX file plus any external-data files next to it that it references."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    extra = set()
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                if Path(entry.value).name != entry.value or entry.value in ("", ".", ".."):
                    # only files beside the graph: a location elsewhere is never read, sized or served
                    raise ValueError(f"{path}: external data location {entry.value!r} of {tensor.name!r} is not a "
                                     "file name beside the model")
                extra.add(path.parent / entry.value)
    return [path, *sorted(extra)]


def size_bytes(path: Path) -> int:
    """Bytes on disk of an ONNX model, external data included."""
    return sum(p.stat().st_size for p in model_files(path))


def onnx_param_count(path: Path) -> int:
    """Number of elements in the model's weight initializers (quantized or not, scales excluded)."""
    import numpy as np
    import onnx

    weight_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                    onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    proto = onnx.load(str(path), load_external_data=False)
    total = 0
    for tensor in proto.graph.initializer:
        # shapes and indices are int64; scales and zero points are quantization bookkeeping, not weights
        if tensor.data_type not in weight_types or tensor.name.endswith(("_scale", "_zero_point")):
            continue
        n = int(np.prod(tensor.dims)) if tensor.dims else 1
        total += n if n > 1 else 0
    return total


def gzip_size_bytes(path: Path, level: int = 9) -> int:
    """Bytes of the model file(s) gzip-compressed at `level`: roughly what a browser downloads."""
    import gzip

    return sum(len(gzip.compress(p.read_bytes(), compresslevel=level)) for p in model_files(path))


def sparsity(path: Path) -> float:
    """Fraction of weight elements that are exactly zero, over the same tensors `onnx_param_count` counts.

    Float weights count when equal to 0.0 (fp16 included, so weights that underflowed to zero count).
    Integer (quantized) weights count when equal to their zero point, i.e. when they dequantize to 0.0;
    the zero point is the initializer named like the weight with `_quantized` replaced by `_zero_point`
    (ONNX Runtime's naming); without one (or one that fits no axis) it is taken as 0.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path), load_external_data=True)
    inits = {t.name: t for t in proto.graph.initializer}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    ints = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    zeros = total = 0
    for name, tensor in inits.items():
        if tensor.data_type not in floats | ints or name.endswith(("_scale", "_zero_point")):
            continue
        values = numpy_helper.to_array(tensor)
        if values.size <= 1:  # scalars are constants, not weights (as in onnx_param_count)
            continue
        zero = 0
        if tensor.data_type in ints:
            zp_name = name.removesuffix("_quantized") + "_zero_point"
            zero = _broadcast_zero_point(numpy_helper.to_array(inits[zp_name]), values) if zp_name in inits else 0
        zeros += int(np.count_nonzero(values == zero))
        total += values.size
    return zeros / total if total else 0.0


def _broadcast_zero_point(zp: Any, values: Any) -> Any:
    """A per-tensor zero point as is; a per-channel one along the first axis whose length matches (else 0)."""
    import numpy as np

    zp = np.asarray(zp)
    if zp.size == 1:
        return zp.reshape(())
    axis = next((i for i, n in enumerate(values.shape) if n == zp.size), None)
    if axis is None:
        return 0
    shape = [1] * values.ndim
    shape[axis] = zp.size
    return zp.reshape(shape)


def node_count(path: Path) -> int:
    """Number of nodes in the main graph of an ONNX file."""
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


# Where quantizers keep scales and zero points: (op type, first input index, last input index + 1).
_QPARAM_INPUTS = {"DequantizeLinear": (1, 3), "QuantizeLinear": (1, 3), "MatMulNBits": (2, 4),
                  "GatherBlockQuantized": (2, 4)}
_QPARAM_SUFFIXES = ("_scale", "_scales", "_zero_point", "_zero_points")


def _qparam_names(proto: Any) -> set[str]:
    """Initializers that are quantization bookkeeping (scales, zero points) rather than weights."""
    names = {t.name for t in proto.graph.initializer if t.name.endswith(_QPARAM_SUFFIXES)}
    for node in proto.graph.node:
        lo, hi = _QPARAM_INPUTS.get(node.op_type, (0, 0))
        names.update(node.input[lo:hi])
    return names


def weight_census(path: Path) -> dict[str, int]:
    """Weight initializers of a model by precision: float32 elements, and low-precision tensors.

    Scales and zero points are not weights and are left out of both counts; so are scalars.
    """
    import numpy as np
    import onnx

    low = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT8,
           onnx.TensorProto.INT4, onnx.TensorProto.UINT4, onnx.TensorProto.INT32}
    proto = onnx.load(str(path), load_external_data=False)
    skip = _qparam_names(proto)
    out = {"float_elems": 0, "low_tensors": 0}
    for tensor in proto.graph.initializer:
        n = int(np.prod(tensor.dims)) if tensor.dims else 1
        if tensor.name in skip or n < 2:
            continue
        if tensor.data_type == onnx.TensorProto.FLOAT:
            out["float_elems"] += n
        elif tensor.data_type in low:
            out["low_tensors"] += 1
    return out


def quantization_report(src: Path, dst: Path) -> dict[str, float]:
    """What a quantizer really did: float32 weight elements of `src` no longer float32 in `dst`, as a
    count and a fraction, and how many low-precision weight tensors `dst` holds."""
    before, after = weight_census(src), weight_census(dst)
    done = max(0, before["float_elems"] - after["float_elems"])
    return {"quantized_params": float(done), "quantized_tensors": float(after["low_tensors"]),
            "quantized_params_frac": done / before["float_elems"] if before["float_elems"] else 0.0}


def _initializers(proto: Any) -> dict[str, Any]:
    return {t.name: t for t in proto.graph.initializer}


def _drop_unused_initializers(proto: Any) -> None:
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
    _drop_unused_initializers(proto)
    return done


# Per-channel axis of the weight input (index 1) of each op: the output-channel axis torch quantizes along.
def _weight_axis(node: Any, ndim: int) -> int | None:
    from onnx import helper

    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return 0 if attrs.get("transB", 0) else 1
    return ndim - 1 if node.op_type == "MatMul" and ndim == 2 else None


def weight_only_qdq(proto: Any, bits: int) -> Any:
    """Store the Conv/Gemm/MatMul weights as int8/int4 + per-channel scales + DequantizeLinear.

    Symmetric grid, scale = max|w| / qmax per output channel: the grid `stages.simquant` trains on, so
    weights that already lie on it are stored exactly. int4 needs opset 21 (the model is converted).
    """
    import onnx

    if bits == 4:
        proto = _at_least_opset(proto, 21)
    inits, dq_nodes = _initializers(proto), []
    for node in proto.graph.node:
        name = node.input[1] if len(node.input) > 1 else ""
        tensor = inits.pop(name, None)  # pop: a weight shared by two nodes is converted once
        if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT or len(tensor.dims) < 2:
            continue
        axis = _weight_axis(node, len(tensor.dims))
        if axis is None:
            continue
        dq_nodes.append(_dequantized(proto, tensor, axis, bits))
    for i, node in enumerate(dq_nodes):  # first in the graph: every consumer comes after
        proto.graph.node.insert(i, node)
    return proto


def _dequantized(proto: Any, tensor: Any, axis: int, bits: int) -> Any:
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
