"""ONNX building blocks of the `kvcache` stage: a node builder and the grouped (KIVI-style) cache layout."""

from __future__ import annotations

from typing import Any


class Builder:
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

    def reduce_max(self, x: str, axis: int = -1) -> str:
        """Max over `axis`, kept (axes became an input in opset 18)."""
        import numpy as np

        if self.opset >= 18:
            return self.op("ReduceMax", [x, self.const([axis], np.int64)], keepdims=1)
        return self.op("ReduceMax", [x], axes=[axis], keepdims=1)

    def reduce_min(self, x: str, axis: int = -1) -> str:
        """Min over `axis`, kept."""
        import numpy as np

        if self.opset >= 18:
            return self.op("ReduceMin", [x, self.const([axis], np.int64)], keepdims=1)
        return self.op("ReduceMin", [x], axes=[axis], keepdims=1)

    def pack4(self, q: str, head_dim: int) -> str:
        """[b, h, s, d] of integers in [-8, 7] -> [b, h, s, d/2] uint8, q[2i] + 8 in the low nibble."""
        import numpy as np

        pairs = self.op("Reshape", [self.op("Add", [q, self.const(8.0)]),
                                    self.const([0, 0, 0, head_dim // 2, 2], np.int64)])
        lo = self.op("Slice", [pairs, self.const([0], np.int64), self.const([1], np.int64), self.const([-1], np.int64)])
        hi = self.op("Slice", [pairs, self.const([1], np.int64), self.const([2], np.int64), self.const([-1], np.int64)])
        byte = self.op("Add", [lo, self.op("Mul", [hi, self.const(16.0)])])
        return self.op("Cast", [self.op("Squeeze", [byte, self.const([-1], np.int64)])], to=2)  # 2 = UINT8

    def unpack4(self, packed: str, head_dim: int) -> str:
        """The inverse of pack4, as float values in [-8, 7]."""
        import numpy as np

        x = self.op("Cast", [packed], to=1)  # 1 = FLOAT
        hi = self.op("Floor", [self.op("Div", [x, self.const(16.0)])])
        lo = self.op("Sub", [x, self.op("Mul", [hi, self.const(16.0)])])
        axis = self.const([-1], np.int64)
        pairs = self.op("Concat", [self.op("Unsqueeze", [lo, axis]), self.op("Unsqueeze", [hi, axis])], axis=-1)
        both = self.op("Reshape", [pairs, self.const([0, 0, 0, head_dim], np.int64)])
        return self.op("Sub", [both, self.const(8.0)])


INT64_MAX = 2**63 - 1


def build_grouped(b: Builder, graph: Any, past_in: Any, new: str, name: str, full: str, spec: dict[str, Any]) -> None:
    """Store one cache tensor as quantized codes + scales + a full-precision window of the latest tokens.

    `spec`: qmax, int4 (bool), per_channel (keys: one scale per channel and group of `group` tokens; else one
    per token, over the head dimension), group (1 when per token), residual, head_dim, float_type, dims,
    symmetric (False: each group's [min, max] is split into 2 * qmax + 1 steps, codes -qmax - 1 .. qmax, and its
    minimum is stored beside the scale as `present.N.*_zero`, fp16, as KIVI does; True: [-absmax, absmax]).
    Of the T tokens cached after this call the first Q = max(0, floor((T - residual) / group) * group) are
    quantized (groups aligned at absolute positions, so a group is quantized once, when it leaves the window)
    and the other T - Q stay at `float_type` in `present.N.*_residual`.
    """
    import numpy as np
    from onnx import TensorProto, helper

    qmax, group, d, dims = spec["qmax"], spec["group"], spec["head_dim"], spec["dims"]
    i64 = np.int64
    residual_in = helper.make_tensor_value_info(f"{past_in.name}_residual", spec["float_type"],
                                                [_d(x) for x in dims[:2]] + [f"{past_in.name}_window", d])
    graph.input.append(residual_in)
    rest = b.op("Concat", [residual_in.name, new], axis=-2)  # the tokens not yet quantized, oldest first
    seq = b.const([2], i64)
    before = b.op("Shape", [past_in.name], start=2, end=3)  # tokens already quantized (a multiple of group)
    total = b.op("Add", [before, b.op("Shape", [rest], start=2, end=3)])
    over = b.op("Div", [b.op("Sub", [total, b.const([spec["residual"]], i64)]), b.const([group], i64)])
    quantized = b.op("Max", [b.op("Mul", [over, b.const([group], i64)]), b.const([0], i64)])
    leaving = b.op("Max", [b.op("Sub", [quantized, before]), b.const([0], i64)])  # 0 after a rollback
    chunk = b.op("Cast", [b.op("Slice", [rest, b.const([0], i64), leaving, seq])], to=TensorProto.FLOAT)
    b.op("Slice", [rest, leaving, b.const([INT64_MAX], i64), seq], out=f"{name}_residual")
    axis = 3 if spec["per_channel"] else -1
    if spec["per_channel"]:  # [b, h, m, d] -> [b, h, m/group, group, d]: statistics over each group's tokens
        grouped = b.op("Reshape", [chunk, b.const([0, 0, -1, group, d], i64)])
    else:
        grouped = chunk
    params16 = {}  # what is stored per group beside the codes: "scale" (and "zero")
    if spec["symmetric"]:
        absmax = b.reduce_max(b.op("Abs", [grouped]), axis=axis)
        params16["scale"] = b.op("Cast", [b.op("Max", [b.op("Div", [absmax, b.const(qmax)]), b.const(1e-6)])],
                                 to=TensorProto.FLOAT16)
        low, shifted = b.const(-qmax), grouped
    else:
        lo, hi = b.reduce_min(grouped, axis=axis), b.reduce_max(grouped, axis=axis)
        steps = b.const(2 * qmax + 1)
        params16["scale"] = b.op("Cast", [b.op("Max", [b.op("Div", [b.op("Sub", [hi, lo]), steps]),
                                                      b.const(1e-6)])], to=TensorProto.FLOAT16)
        params16["zero"] = b.op("Cast", [lo], to=TensorProto.FLOAT16)
    scale = b.op("Cast", [params16["scale"]], to=TensorProto.FLOAT)  # the stored (fp16) scale, as used to decode
    if "zero" in params16:  # codes count steps up from the (fp16) minimum, shifted to -qmax - 1 .. qmax
        shifted = b.op("Sub", [b.op("Sub", [grouped, b.op("Cast", [params16["zero"]], to=TensorProto.FLOAT)]),
                               b.op("Mul", [b.const(qmax + 1), scale])])
        low = b.const(-qmax - 1)
    q = b.op("Clip", [b.op("Round", [b.op("Div", [shifted, scale])]), low, b.const(qmax)])
    flat_shape = b.const([0, 0, -1, d], i64)
    if spec["per_channel"]:
        q = b.op("Reshape", [q, flat_shape])
        params16 = {k: b.op("Reshape", [v, flat_shape]) for k, v in params16.items()}
    code = b.pack4(q, d) if spec["int4"] else b.op("Cast", [q], to=TensorProto.INT8)
    stored = b.op("Concat", [past_in.name, code], axis=-2, out=name)
    per_group_dims = [_d(x) for x in dims[:2]] + ([f"{name}_groups", d] if spec["per_channel"]
                                                  else [f"{name}_tokens", 1])
    full_params = {}
    for kind, fresh in params16.items():
        given = helper.make_tensor_value_info(f"{past_in.name}_{kind}", TensorProto.FLOAT16,
                                              [_d(x) for x in dims[:2]] + [
                                                  f"{past_in.name}_groups" if spec["per_channel"] else _d(dims[2]),
                                                  d if spec["per_channel"] else 1])
        graph.input.append(given)
        full_params[kind] = b.op("Cast", [b.op("Concat", [given.name, fresh], axis=-2, out=f"{name}_{kind}")],
                                 to=TensorProto.FLOAT)
        graph.output.append(helper.make_tensor_value_info(f"{name}_{kind}", TensorProto.FLOAT16, per_group_dims))
    values = b.unpack4(stored, d) if spec["int4"] else b.op("Cast", [stored], to=TensorProto.FLOAT)
    if spec["per_channel"]:
        values = b.op("Reshape", [values, b.const([0, 0, -1, group, d], i64)])
        full_params = {k: b.op("Unsqueeze", [v, b.const([3], i64)]) for k, v in full_params.items()}
    if "zero" in full_params:  # x = (code + qmax + 1) * scale + zero
        values = b.op("Add", [values, b.const(qmax + 1)])
    deq = b.op("Mul", [values, full_params["scale"]])
    if "zero" in full_params:
        deq = b.op("Add", [deq, full_params["zero"]])
    if spec["per_channel"]:
        deq = b.op("Reshape", [deq, flat_shape])
    b.op("Concat", [b.op("Cast", [deq], to=spec["float_type"]), f"{name}_residual"], axis=-2, out=full)
    graph.output.append(helper.make_tensor_value_info(f"{name}_residual", spec["float_type"],
                                                      [_d(x) for x in dims[:2]] + [f"{name}_window", d]))


def _d(dim: Any) -> Any:
    return dim.dim_param or dim.dim_value
