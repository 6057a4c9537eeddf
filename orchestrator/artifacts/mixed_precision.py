"""One model file at a precision chosen per quantizer group: what sensitivity analysis and accuracy control build.

A *group* is the unit whose precision is chosen: the weight-reading nodes of one transformer block (node or
weight names with `layers.N` / `layer.N` / `h.N` / `blocks.N`), else a single node (a MatMul / Gemm / Conv
weight, an embedding table). Each group sits on a *ladder* of precisions, lowest first: weight-only int4 ->
int8 -> float, weight-only int8 -> float, int8 dynamic / static -> float. `Mixed.build(levels)` writes the model
with every group at the ladder's bottom unless `levels` raises it, always from the same prepared float graph,
so two builds differ only in the groups whose level differs.

Weight-only builds run the int4 pass with the raised nodes excluded, then an RTN int8 pass over the nodes
raised to int8 (GPTQ and HQQ have no 8-bit MatMulNBits); ORT quantizes embedding tables (Gather) at 4 bits
only, so a table raised from int4 goes straight to float. int8 builds run ORT's dynamic / static quantizer
with the float nodes excluded (static: the activations around them are still calibrated and quantized).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLOAT = "float"
LADDERS = {"int4": ("int4", "int8", FLOAT), "int8_weight": ("int8", FLOAT), "dynamic": ("int8", FLOAT),
           "static": ("int8", FLOAT)}
BITS = {"int4": 4, "int8": 8, FLOAT: 32}
_BLOCK = re.compile(r"(?:^|[./_])(layers?|h|blocks?)[./_](\d+)(?=[./_]|$)")
_WEIGHT_OPS = {"weight_only": ("MatMul",), "dynamic": ("MatMul", "Conv"), "static": ("MatMul", "Gemm", "Conv")}


@dataclass(frozen=True)
class Group:
    """Nodes whose precision moves together, and how many weights they hold."""

    name: str
    nodes: tuple[str, ...]
    params: int


@dataclass
class Options:
    """How the mode quantizes (the quantize stage's params that apply), and its calibration data if any."""

    kind: str  # a LADDERS key
    block_size: int = 32
    symmetric: bool = True
    per_channel: bool = False
    algorithm: str = "rtn"
    accuracy_level: int | None = None
    calib_feeds: list[dict[str, Any]] | None = None  # gptq
    static: dict[str, Any] = field(default_factory=dict)  # calibration, percentile (static int8)
    reader: Any = None  # an ort_int8.Calibration (static int8)


def weight_nodes(proto: Any, kind: str) -> dict[str, tuple[str, int]]:
    """node name -> (weight initializer, element count) of every node the mode's quantizer would quantize."""
    import numpy as np
    from onnx import TensorProto

    from orchestrator.artifacts.weight_only import non_table_gathers

    floats = {i.name: int(np.prod(i.dims)) for i in proto.graph.initializer
              if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16) and len(i.dims) >= 2}
    ops = _WEIGHT_OPS["weight_only" if kind in ("int4", "int8_weight") else kind]
    lookups = set(non_table_gathers(proto))
    out = {}
    for node in proto.graph.node:
        if node.op_type in ops and len(node.input) > 1 and node.input[1] in floats:
            out[node.name] = (node.input[1], floats[node.input[1]])
        elif node.op_type == "Gather" and node.name not in lookups and node.input[0] in floats:
            out[node.name] = (node.input[0], floats[node.input[0]])
    return out


def groups_of(weights: dict[str, tuple[str, int]]) -> list[Group]:
    """Transformer blocks where names say so, single nodes (named by their weight) elsewhere; graph order."""
    members: dict[str, list[str]] = {}
    for node, (weight, _) in weights.items():
        found = _BLOCK.search(node) or _BLOCK.search(weight)
        name = f"{found.group(1)}.{found.group(2)}" if found else weight.removesuffix("_kn")
        members.setdefault(name, []).append(node)
    return [Group(name, tuple(nodes), sum(weights[n][1] for n in nodes)) for name, nodes in members.items()]


class Mixed:
    """Builds of one float model with each group at its own precision (see the module docstring)."""

    def __init__(self, src: Path, work: Path, options: Options) -> None:
        import onnx

        from orchestrator.artifacts.qdq import gemm_to_matmul, untie_transposed

        self.options, self.work = options, work
        self.ladder = LADDERS[options.kind]
        self.prepared = work / "prepared.onnx.tmp"
        self.gemm_rewritten = 0
        if options.kind == "static":  # calibration runs on ORT's pre-processed graph: groups name its nodes
            from orchestrator.artifacts.ort_int8 import static_prepared

            static_prepared(src, self.prepared)
            src = self.prepared
        proto = onnx.load(str(src))
        if options.kind in ("int4", "int8_weight"):  # the int4 quantizer reads MatMul only
            self.gemm_rewritten = gemm_to_matmul(proto)
        untie_transposed(proto)
        for i, node in enumerate(proto.graph.node):  # exclusions are by name: every node needs one
            node.name = node.name or f"{node.op_type.lower()}_{i}"
        onnx.save(proto, str(self.prepared))
        self.weights = weight_nodes(proto, options.kind)
        self.groups = groups_of(self.weights)
        self.tables = {n.name for n in proto.graph.node if n.op_type == "Gather" and n.name in self.weights}

    def ladder_of(self, group: Group) -> tuple[str, ...]:
        """The precisions `group` can take, lowest first (embedding tables skip int8: see the module docstring)."""
        if self.ladder[0] == "int4" and set(group.nodes) <= self.tables:
            return tuple(level for level in self.ladder if level != "int8")
        return self.ladder

    def level_of(self, levels: dict[str, str]) -> dict[str, str]:
        """node -> precision, every group at the ladder's bottom unless `levels` (group -> precision) raises it."""
        at = {n: levels.get(g.name, self.ladder[0]) for g in self.groups for n in g.nodes}
        return {n: FLOAT if lv == "int8" and self.ladder[0] == "int4" and n in self.tables else lv
                for n, lv in at.items()}

    def build(self, levels: dict[str, str], dst: Path) -> Path:
        """Write the model with groups at `levels` (missing groups: the lowest precision) to `dst`."""
        at = self.level_of(levels)
        o = self.options
        if o.kind in ("dynamic", "static"):
            from orchestrator.artifacts.ort_int8 import dynamic_int8, static_int8

            floats = [n for n, lv in at.items() if lv == FLOAT]
            if o.kind == "dynamic":
                dynamic_int8(self.prepared, dst, o.per_channel, o.symmetric, self.work, exclude=floats)
            else:
                static_int8(o.reader, self.prepared, dst, per_channel=o.per_channel, symmetric=o.symmetric,
                            exclude=floats, **o.static)
            return dst
        return self._weight_only(at, dst)

    def _weight_only(self, at: dict[str, str], dst: Path) -> Path:
        from orchestrator.artifacts.weight_only import quantize_file

        o, bottom = self.options, self.ladder[0]
        raised = [n for n, lv in at.items() if lv != bottom]
        int8 = bottom == "int4" and any(lv == "int8" for lv in at.values())
        first = self.work / "mixed.onnx.tmp" if int8 else dst
        quantize_file(self.prepared, first, bits=BITS[bottom], block_size=o.block_size, symmetric=o.symmetric,
                      algorithm=o.algorithm, accuracy_level=o.accuracy_level, calib=o.calib_feeds, exclude=raised)
        if int8:
            quantize_file(first, dst, bits=8, block_size=o.block_size, symmetric=o.symmetric,
                          accuracy_level=o.accuracy_level, exclude=[n for n, lv in at.items() if lv == FLOAT])
            first.unlink()
        return dst

    def bits_per_weight(self, levels: dict[str, str]) -> float:
        """Mean stored bits per weight of the groups (block scales aside; float = 32)."""
        at = self.level_of(levels)
        total = sum(count for _, count in self.weights.values())
        bits = sum(BITS[at[n]] * count for n, (_, count) in self.weights.items())
        return bits / total if total else 0.0

    def close(self) -> None:
        """Remove the scratch files."""
        self.prepared.unlink(missing_ok=True)
