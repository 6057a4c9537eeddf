"""`kvcache`: store a causal LM's KV cache in fp16, int8 or int4 (ONNX -> ONNX), so its memory is real.

The KV cache is the memory that grows with every generated token. This stage rewrites the KV-cache graph
(optimum's `text-generation-with-past` layout: each `present.N.key|value` is `Concat(past, new)`) so that
the cache it returns and takes back is stored at the chosen precision:

- `fp16`: the past/present tensors are float16 (Cast in, Cast out);
- `int8`: int8 values and one float16 scale per head and token (`present.N.key_scale`), symmetric absmax
  over the head dimension: scale = max|x| / 127, q = round(x / scale);
- `int4`: the same with q in [-7, 7], two values packed per byte (uint8, low nibble first).

Per head and per token (one scale for each head's `head_dim` values at each position) is the grouping of
the per-token schemes (e.g. KIVI's value cache); keys are not grouped per channel, which matters at 4 bits
and shows in the measured perplexity. Attention always reads the dequantized cache, the current token's
key/value included, as a runtime that writes to the cache before attending does, so the one-pass
perplexity of the node is the perplexity a decoder with this cache sees. Why a stage and not an eval
setting: the precision changes the graph's inputs and outputs (the artifact a deployment runs), so it is
keyed, cached, swept and reported like any other artifact; `fp32` leaves the graph unchanged (the
reference row of a sweep). The stage logs `kv_bits` and `kv_agreement` (share of test positions whose
top-1 next token equals that of its parent, the same model with the fp32 cache); the node's measurement
reports `kv_cache_mb_per_1k_tokens` from the cache tensors the graph really returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import check_choice
from orchestrator.stages.base import ONNX, Stage, StageContext, StageOutput

DTYPES = ("fp32", "fp16", "int8", "int4")
BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}
QMAX = {"int8": 127.0, "int4": 7.0}
PAST, PRESENT = "past_key_values.", "present."


@dataclass
class KVCacheParams:
    """dtype: the precision the KV cache is stored in (fp32 = unchanged)."""

    dtype: str = "int8"

    def __post_init__(self) -> None:
        check_choice("dtype", self.dtype, DTYPES)


class KVCache(Stage):
    """Rewrite a KV-cache LM graph so that its cache is stored at `dtype`; log agreement with the fp32 cache."""

    name = "kvcache"
    version = "1"
    consumes = ONNX
    produces = ONNX
    Params = KVCacheParams
    libraries = ("onnx",)

    @classmethod
    def check_task(cls, params: KVCacheParams, task_cls: type) -> None:
        """Only a task whose graph carries a KV cache takes the stage, before any compute."""
        from orchestrator.tasks.capabilities import KVCache, require

        require(task_cls, KVCache, "stages.kvcache", params.dtype)

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        import onnx

        from orchestrator.measure.probe import session
        from orchestrator.tasks.lm import measure as lm_measure

        src, out = Path(model), ctx.work_dir / "model.onnx"
        graph = onnx.load(str(src))
        if self.params.dtype != "fp32":
            rewrite(graph, self.params.dtype)
        onnx.save(graph, str(out))
        parent = lm_measure.reference_tokens(ctx.task, src, 1)  # once per process: siblings share the parent
        mine = lm_measure.quality(ctx.task, session(out, 1), None)[1]
        return StageOutput(out, {"kv_bits": float(BITS[self.params.dtype]),
                                 "kv_agreement": float((parent == mine).mean())})


def rewrite(model: Any, dtype: str) -> None:
    """Make every `present.*` = Concat(past, new) of `model` store its cache at `dtype` (in place)."""
    import onnx

    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    presents = [o.name for o in graph.output if o.name.startswith(PRESENT)]
    if not presents:
        raise ValueError("kvcache: the graph has no present.* outputs (export it with its KV cache)")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    inputs = {i.name: i for i in graph.input}
    for name in presents:
        concat = producers.get(name)
        past = name.replace(PRESENT, PAST, 1)
        if concat is None or concat.op_type != "Concat" or concat.input[0] != past or past not in inputs:
            raise ValueError(f"kvcache: {name} is not Concat({past}, new); this graph's cache layout is not "
                             "supported (export with optimum's text-generation-with-past, before graph fusion)")
        _rewrite_one(graph, concat, inputs[past], name, dtype, opset)
    del graph.value_info[:]  # stale float shapes of renamed tensors; ORT infers them again
    onnx.checker.check_model(model)


def _rewrite_one(graph: Any, concat: Any, past_in: Any, name: str, dtype: str, opset: int) -> None:
    """Replace one cache Concat: quantize the new entries, concatenate stored, dequantize for attention."""
    float_type = past_in.type.tensor_type.elem_type
    new, full = concat.input[1], f"{name}/dequantized"
    for node in graph.node:  # attention now reads the dequantized cache
        for i, tensor in enumerate(node.input):
            if tensor == name:
                node.input[i] = full
    dims = past_in.type.tensor_type.shape.dim
    head_dim = dims[3].dim_value
    b = _Builder(graph, name, opset)
    _build(b, graph, past_in, new, name, full, dtype, dims, head_dim, float_type)
    at = list(graph.node).index(concat)  # the new nodes take the Concat's place: the graph stays sorted
    graph.node.remove(concat)
    for offset, node in enumerate(b.nodes):
        graph.node.insert(at + offset, node)


def _build(b: _Builder, graph: Any, past_in: Any, new: str, name: str, full: str, dtype: str, dims: Any,
           head_dim: int, float_type: int) -> None:
    """The nodes (into `b`) and I/O changes that store one cache tensor at `dtype`."""
    from onnx import TensorProto, helper

    if dtype == "fp16":
        stored = b.op("Concat", [b.op("Cast", [past_in.name], to=TensorProto.FLOAT16),
                                 b.op("Cast", [new], to=TensorProto.FLOAT16)], axis=-2)
        b.op("Identity", [stored], out=name)
        b.op("Cast", [stored], out=full, to=float_type)
        past_in.type.tensor_type.elem_type = TensorProto.FLOAT16
        _set_output(graph, name, TensorProto.FLOAT16, dims, head_dim)
        return
    if head_dim == 0 or (dtype == "int4" and head_dim % 2):
        raise ValueError(f"kvcache: {past_in.name} needs a static (and for int4 even) head dimension")
    x = b.op("Cast", [new], to=TensorProto.FLOAT)
    absmax = b.reduce_max(b.op("Abs", [x]))
    scale16 = b.op("Cast", [b.op("Max", [b.op("Div", [absmax, b.const(QMAX[dtype])]), b.const(1e-6)])],
                   to=TensorProto.FLOAT16)
    scale = b.op("Cast", [scale16], to=TensorProto.FLOAT)
    q = b.op("Clip", [b.op("Round", [b.op("Div", [x, scale])]), b.const(-QMAX[dtype]), b.const(QMAX[dtype])])
    code, stored_type = (b.op("Cast", [q], to=TensorProto.INT8), TensorProto.INT8) if dtype == "int8" else (
        b.pack4(q, head_dim), TensorProto.UINT8)
    scale_in = helper.make_tensor_value_info(f"{past_in.name}_scale", TensorProto.FLOAT16,
                                             [_dim(d) for d in dims[:3]] + [1])
    graph.input.append(scale_in)
    stored = b.op("Concat", [past_in.name, code], axis=-2, out=name)
    scales = b.op("Concat", [scale_in.name, scale16], axis=-2, out=f"{name}_scale")
    values = b.op("Cast", [stored], to=TensorProto.FLOAT) if dtype == "int8" else b.unpack4(stored, head_dim)
    deq = b.op("Mul", [values, b.op("Cast", [scales], to=TensorProto.FLOAT)])
    b.op("Cast", [deq], out=full, to=float_type)
    past_in.type.tensor_type.elem_type = stored_type
    if dtype == "int4":
        dims[3].dim_value = head_dim // 2
    _set_output(graph, name, stored_type, dims, head_dim // 2 if dtype == "int4" else head_dim)
    graph.output.append(helper.make_tensor_value_info(f"{name}_scale", TensorProto.FLOAT16,
                                                      [_dim(d) for d in dims[:3]] + [1]))


def _dim(d: Any) -> Any:
    return d.dim_param or d.dim_value


def _set_output(graph: Any, name: str, elem_type: int, dims: Any, last: int) -> None:
    """Retype the graph output `name` (stored cache) as `elem_type`, last dimension `last`."""
    from onnx import helper

    index = next(i for i, o in enumerate(graph.output) if o.name == name)
    shape = [_dim(d) for d in dims[:3]] + [last]
    graph.output[index].CopyFrom(helper.make_tensor_value_info(name, elem_type, shape))


class _Builder:
    """Appends nodes (and constants) to a graph under unique names derived from one prefix."""

    def __init__(self, graph: Any, prefix: str, opset: int) -> None:
        self.graph, self.prefix, self.opset, self.count = graph, prefix, opset, 0
        self.nodes: list[Any] = []

    def _name(self) -> str:
        self.count += 1
        return f"{self.prefix}/kv{self.count}"

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        name = self._name()
        out = out or f"{name}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def const(self, value: Any, dtype: Any = None) -> str:
        import numpy as np
        from onnx import numpy_helper

        name = f"{self._name()}_const"
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype or np.float32), name))
        return name

    def reduce_max(self, x: str) -> str:
        """Max over the last axis, kept (axes became an input in opset 18)."""
        import numpy as np

        if self.opset >= 18:
            return self.op("ReduceMax", [x, self.const([-1], np.int64)], keepdims=1)
        return self.op("ReduceMax", [x], axes=[-1], keepdims=1)

    def pack4(self, q: str, head_dim: int) -> str:
        """[b, h, s, d] of integers in [-7, 7] -> [b, h, s, d/2] uint8, q[2i] + 8 in the low nibble."""
        import numpy as np

        pairs = self.op("Reshape", [self.op("Add", [q, self.const(8.0)]),
                                    self.const([0, 0, 0, head_dim // 2, 2], np.int64)])
        lo = self.op("Slice", [pairs, self.const([0], np.int64), self.const([1], np.int64), self.const([-1], np.int64)])
        hi = self.op("Slice", [pairs, self.const([1], np.int64), self.const([2], np.int64), self.const([-1], np.int64)])
        byte = self.op("Add", [lo, self.op("Mul", [hi, self.const(16.0)])])
        return self.op("Cast", [self.op("Squeeze", [byte, self.const([-1], np.int64)])], to=2)  # 2 = UINT8

    def unpack4(self, packed: str, head_dim: int) -> str:
        """The inverse of pack4, as float values in [-7, 7]."""
        import numpy as np

        x = self.op("Cast", [packed], to=1)  # 1 = FLOAT
        hi = self.op("Floor", [self.op("Div", [x, self.const(16.0)])])
        lo = self.op("Sub", [x, self.op("Mul", [hi, self.const(16.0)])])
        axis = self.const([-1], np.int64)
        pairs = self.op("Concat", [self.op("Unsqueeze", [lo, axis]), self.op("Unsqueeze", [hi, axis])], axis=-1)
        both = self.op("Reshape", [pairs, self.const([0, 0, 0, head_dim], np.int64)])
        return self.op("Sub", [both, self.const(8.0)])
