"""`kvcache`: store a causal LM's KV cache in fp16, int8 or int4 (ONNX -> ONNX), so its memory is real.

The KV cache is the memory that grows with every generated token. This stage rewrites the KV-cache graph
(optimum's `text-generation-with-past` layout: each `present.N.key|value` is `Concat(past, new)`) so that
the cache it returns and takes back is stored at the chosen precision:

- `fp16`: the past/present tensors are float16 (Cast in, Cast out);
- `int8`: int8 values and one float16 scale per head and token (`present.N.key_scale`), symmetric absmax
  over the head dimension: scale = max|x| / 127, q = round(x / scale);
- `int4`: the same with q in [-7, 7], two values packed per byte (uint8, low nibble first, stored + 8).

Per head and per token (one scale for each head's `head_dim` values at each position) is the default
grouping. At 4 bits keys want per-channel scales (KIVI): `key_grouping: channel` and `residual` select the
grouped layout (int8/int4; kvgraph.build_grouped). Each cache tensor is then stored as codes, fp16 scales
and a full-precision window (`present.N.key_residual`, the model's float type): of the T tokens cached the
first Q = max(0, floor((T - residual) / group) * group) are quantized, groups aligned at absolute positions,
so a group of keys is quantized once, per channel (absmax over its `group` tokens, one scale per channel and
group in `key_scale`), when it leaves the window; values are quantized per token (group 1) as they leave it.
With `residual: 0` and per-channel keys the last, incomplete group still stays at full precision. The byte
counts include codes, scales and window. One-pass scoring is a prefill: every query reads the same stored
cache, so a query early in a window reads keys that a token-by-token decoder would still hold at full
precision, and per-channel scales span their whole group; decoding reaches the same stored cache (the first
layer's exactly), with at least as many full-precision tokens along the way. The default layout stays as it
was (same graph, same node keys). Attention always reads the dequantized cache, the current token's
key/value included, as a runtime that writes to the cache before attending does, so with the default
layout the one-pass perplexity of the node is the perplexity a decoder with this cache sees. Why a stage and not an eval
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

from orchestrator.errors import ConfigError, check_choice, check_range
from orchestrator.stages.base import ONNX, Stage, StageContext, StageOutput
from orchestrator.stages.kvgraph import Builder, build_grouped

DTYPES = ("fp32", "fp16", "int8", "int4")
GROUPINGS = ("token", "channel")
# left out of a node's params (its key) at these values
DEFAULTS = {"key_grouping": "token", "residual": 0, "group": 32, "symmetric": True}
BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}
QMAX = {"int8": 127.0, "int4": 7.0}
PAST, PRESENT = "past_key_values.", "present."


@dataclass
class KVCacheParams:
    """dtype: the precision the KV cache is stored in (fp32 = unchanged). For int8/int4 only:
    key_grouping: `token` (one scale per head and token) or `channel` (one per channel and group of `group`
    tokens, KIVI's key scheme); residual: the latest tokens kept at full precision (0 = none);
    symmetric: False stores each group's minimum beside its scale and uses all 2^bits codes over [min, max]
    (KIVI's asymmetric scheme; needs the grouped layout, which it selects)."""

    dtype: str = "int8"
    key_grouping: str = "token"
    residual: int = 0
    group: int = 32
    symmetric: bool = True

    def __post_init__(self) -> None:
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("key_grouping", self.key_grouping, GROUPINGS)
        check_range("residual", self.residual, 0, 1_000_000)
        check_range("group", self.group, 1, 4096)
        for key, default in DEFAULTS.items():
            if key != "group" and getattr(self, key) != default and self.dtype not in QMAX:
                raise ConfigError(key, getattr(self, key), f"applies to an int8 or int4 cache, not {self.dtype}")

    @property
    def grouped(self) -> bool:
        """Whether the cache takes the grouped layout (codes + scales + full-precision window)."""
        return self.key_grouping != "token" or self.residual > 0 or not self.symmetric


class KVCache(Stage):
    """Rewrite a KV-cache LM graph so that its cache is stored at `dtype`; log agreement with the fp32 cache."""

    name = "kvcache"
    version = "1"
    consumes = ONNX
    produces = ONNX
    Params = KVCacheParams
    libraries = ("onnx",)

    @classmethod
    def plan_params(cls, own: dict[str, Any], stages: dict[str, dict[str, Any]],
                    earlier: tuple[Any, ...], chain: str) -> dict[str, Any]:
        """The settings at their defaults stay out of the node's params, so existing keys do not change;
        `group` only counts for per-channel keys."""
        channel = own.get("key_grouping", "token") == "channel"
        return {k: v for k, v in own.items()
                if not (k in DEFAULTS and (v == DEFAULTS[k] or (k == "group" and not channel)))}

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
            rewrite(graph, self.params.dtype, self.params)
        onnx.save(graph, str(out))
        parent = lm_measure.reference_tokens(ctx.task, src, 1)  # once per process: siblings share the parent
        mine = lm_measure.quality(ctx.task, session(out, 1), None)[1]
        return StageOutput(out, {"kv_bits": float(BITS[self.params.dtype]),
                                 "kv_agreement": float((parent == mine).mean())})


def rewrite(model: Any, dtype: str, params: KVCacheParams | None = None) -> None:
    """Make every `present.*` = Concat(past, new) of `model` store its cache at `dtype` (in place); `params`
    choose the grouped layout (None: per-token scales, no full-precision window)."""
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
        _rewrite_one(graph, concat, inputs[past], name, dtype, opset, params)
    del graph.value_info[:]  # stale float shapes of renamed tensors; ORT infers them again
    onnx.checker.check_model(model)


def _rewrite_one(graph: Any, concat: Any, past_in: Any, name: str, dtype: str, opset: int,
                 params: KVCacheParams | None) -> None:
    """Replace one cache Concat: quantize the new entries, concatenate stored, dequantize for attention."""
    float_type = past_in.type.tensor_type.elem_type
    new, full = concat.input[1], f"{name}/dequantized"
    for node in graph.node:  # attention now reads the dequantized cache
        for i, tensor in enumerate(node.input):
            if tensor == name:
                node.input[i] = full
    dims = past_in.type.tensor_type.shape.dim
    head_dim = dims[3].dim_value
    b = Builder(graph, name, opset)
    if params is not None and params.grouped:
        _logical_past(graph, past_in, concat, opset)
        _build_grouped(b, graph, past_in, new, name, full, dtype, dims, head_dim, float_type, params)
    else:
        _build(b, graph, past_in, new, name, full, dtype, dims, head_dim, float_type)
    at = list(graph.node).index(concat)  # the new nodes take the Concat's place: the graph stays sorted
    graph.node.remove(concat)
    for offset, node in enumerate(b.nodes):
        graph.node.insert(at + offset, node)


def _build(b: Builder, graph: Any, past_in: Any, new: str, name: str, full: str, dtype: str, dims: Any,
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


def _logical_past(graph: Any, past_in: Any, concat: Any, opset: int) -> None:
    """Nodes other than the cache Concat that read a past input (the export derives the mask's length from its
    shape) read a stand-in of the past's full length instead: quantized tokens + the full-precision window."""
    import numpy as np
    from onnx import numpy_helper

    readers = [n for n in graph.node if n is not concat and past_in.name in n.input]
    if not readers:
        return
    b, stand_in = Builder(graph, f"{past_in.name}/logical", opset), f"{past_in.name}/logical"
    window = f"{past_in.name}_residual"
    tokens = b.op("Add", [b.op("Shape", [past_in.name], start=2, end=3), b.op("Shape", [window], start=2, end=3)])
    shape = b.op("Concat", [b.op("Shape", [window], start=0, end=2), tokens, b.op("Shape", [window], start=3)], axis=0)
    zero = numpy_helper.from_array(np.zeros((1,), dtype=np.float32), f"{stand_in}_zero")
    graph.initializer.append(zero)
    b.op("Expand", [zero.name, shape], out=stand_in)
    for node in readers:
        for i, tensor in enumerate(node.input):
            if tensor == past_in.name:
                node.input[i] = stand_in
    for offset, node in enumerate(b.nodes):
        graph.node.insert(offset, node)


def _build_grouped(b: Builder, graph: Any, past_in: Any, new: str, name: str, full: str, dtype: str, dims: Any,
                   head_dim: int, float_type: int, params: KVCacheParams) -> None:
    """The grouped layout (see kvgraph.build_grouped): keys per channel if asked, values always per token."""
    from onnx import TensorProto

    if head_dim == 0 or (dtype == "int4" and head_dim % 2):
        raise ValueError(f"kvcache: {past_in.name} needs a static (and for int4 even) head dimension")
    per_channel = params.key_grouping == "channel" and name.endswith(".key")
    dims[2].dim_param = f"{past_in.name}_quantized"  # keys and values now hold different numbers of tokens
    build_grouped(b, graph, past_in, new, name, full, {
        "qmax": QMAX[dtype], "int4": dtype == "int4", "per_channel": per_channel,
        "group": params.group if per_channel else 1, "residual": params.residual, "head_dim": head_dim,
        "float_type": float_type, "dims": dims, "symmetric": params.symmetric})
    stored_type = TensorProto.UINT8 if dtype == "int4" else TensorProto.INT8
    past_in.type.tensor_type.elem_type = stored_type
    if dtype == "int4":
        dims[3].dim_value = head_dim // 2
    _set_output(graph, name, stored_type, dims, head_dim // 2 if dtype == "int4" else head_dim)
    next(o for o in graph.output if o.name == name).type.tensor_type.shape.dim[2].dim_param = f"{name}_quantized"


def _dim(d: Any) -> Any:
    return d.dim_param or d.dim_value


def _set_output(graph: Any, name: str, elem_type: int, dims: Any, last: int) -> None:
    """Retype the graph output `name` (stored cache) as `elem_type`, last dimension `last`."""
    from onnx import helper

    index = next(i for i, o in enumerate(graph.output) if o.name == name)
    shape = [_dim(d) for d in dims[:3]] + [last]
    graph.output[index].CopyFrom(helper.make_tensor_value_info(name, elem_type, shape))
