"""ONNX helpers shared by stages and evaluation: export, a CPU session, a model's files, size, parameter counts,
census."""

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


def session(path: Path | str, threads: int) -> Any:
    """An ONNX Runtime CPU session with a fixed intra-op thread count (sequential execution)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


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


def same_bytes(a: Path, b: Path) -> bool:
    """Whether two ONNX models are the same bytes (graph and external data files, compared by size, then sha256)."""
    import hashlib

    def digest(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    left, right = model_files(a), model_files(b)
    if [p.stat().st_size for p in left] != [p.stat().st_size for p in right]:
        return False
    return all(digest(x) == digest(y) for x, y in zip(left, right, strict=True))


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


# node type -> (operator family, precision); a float MatMul / Gather counts only when it reads a weight
_QUANTIZED_OPS = {"MatMulInteger": ("matmul", "int8"), "DynamicQuantizeMatMul": ("matmul", "int8"),
                  "QLinearMatMul": ("matmul", "int8"), "ConvInteger": ("conv", "int8"),
                  "QLinearConv": ("conv", "int8")}


def precision_by_op(path: Path) -> dict[str, float]:
    """Per operator family, how many weight-reading nodes run at which precision: `ops_<precision>_<family>`
    (e.g. ops_int4_matmul, ops_int8_matmul, ops_int4_gather, ops_float_gather), so a mixed mode shows
    what went where. Int lookups (a trimmed vocabulary's id map) and activation x activation MatMuls
    (attention scores) carry no weight and are not counted."""
    import onnx
    from onnx import TensorProto

    proto = onnx.load(str(path), load_external_data=False)
    inits = {i.name: i.data_type for i in proto.graph.initializer}
    dequantized = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
    out: dict[str, float] = {}
    for node in proto.graph.node:
        kind = _QUANTIZED_OPS.get(node.op_type)
        if node.op_type in ("MatMulNBits", "GatherBlockQuantized"):
            bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
            kind = (node.op_type[:6].lower(), f"int{bits}")
        elif node.op_type in ("MatMul", "Gemm", "Gather", "Conv"):
            weight = node.input[0] if node.op_type == "Gather" else node.input[1]
            if weight in dequantized or inits.get(weight) in (TensorProto.INT8, TensorProto.UINT8):
                kind = (node.op_type.lower(), "int8")  # QDQ (static int8), or an int8 table dequantized after
            elif inits.get(weight) in floats:
                kind = (node.op_type.lower(), "float16" if inits[weight] == TensorProto.FLOAT16 else "float")
        if kind:
            key = f"ops_{kind[1]}_{kind[0]}"
            out[key] = out.get(key, 0.0) + 1.0
    return out


INT8_KERNELS = ("QLinearMatMul", "QLinearConv", "QGemm", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
                "MatMulInteger", "ConvInteger", "QAttention", "MatMulNBits", "GatherBlockQuantized")
FLOAT_KERNELS = ("MatMul", "FusedMatMul", "Gemm", "Conv", "FusedConv")


def kernels_after_optimization(path: Path) -> dict[str, float]:
    """What ONNX Runtime runs once it has optimized the graph as the measurement session does: how many
    integer kernels its quantized operators were fused into (`ort_int_kernels`), how many float MatMul /
    Gemm / Conv stayed (`ort_float_kernels`) and how many DequantizeLinear nodes are left in the graph
    (`ort_dequantize_left`; a QDQ model whose DequantizeLinear nodes feed float kernels runs in float)."""
    import collections
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3  # its warning about saving an ALL-level graph concerns portability only
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        ops = collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath,
                                                                load_external_data=False).graph.node)
    return {"ort_int_kernels": float(sum(ops[k] for k in INT8_KERNELS)),
            "ort_float_kernels": float(sum(ops[k] for k in FLOAT_KERNELS)),
            "ort_dequantize_left": float(ops["DequantizeLinear"])}
