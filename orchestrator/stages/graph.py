"""`graph`: graph-level optimization of an ONNX model: onnxslim, then ONNX Runtime's optimizer.

The optimized graph is written to the node, and the node counts before and after are logged, so the
effect is measured rather than assumed (latency comes from the node's evaluation as for every node).
Note that evaluation sessions apply ORT's own optimizations at load time too, so the latency gain of
this stage over its parent is mostly what onnxslim and the saved, already-fused graph add.
`all` can write layout-specific fused kernels (NCHWc): such a file is meant for the CPU it was made on.
The saved graph is what ORT runs on this provider, which can differ from the input in storage too: on
CPU an fp16 model gains Casts around Conv/Gemm (no fp16 kernels), and `all` folds them into fp32 weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError, check_choice
from orchestrator.stages.base import ONNX, Stage, StageContext, StageOutput

LEVELS = ["none", "basic", "extended", "all"]


@dataclass
class GraphParams:
    """level: ONNX Runtime graph optimization level (none: skip ORT); slim: run onnxslim first."""

    level: str = "extended"
    slim: bool = True

    def __post_init__(self) -> None:
        check_choice("level", self.level, LEVELS)
        if self.level == "none" and not self.slim:
            raise ConfigError("slim", self.slim, "must be true when level is none (the stage would do nothing)")


class Graph(Stage):
    """Simplify and fuse the graph; log nodes before/after."""

    name = "graph"
    version = "1"
    consumes = ONNX
    produces = ONNX
    Params = GraphParams
    libraries = ("onnx", "onnxruntime", "onnxslim")

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        import onnx

        from orchestrator.artifacts.onnx_utils import node_count

        src, out = Path(model), ctx.work_dir / "model.onnx"
        before = node_count(src)
        current = src
        if self.params.slim:
            import onnxslim

            onnx.save(onnxslim.slim(str(src)), str(out))
            current = out
        slimmed = node_count(current)
        if self.params.level != "none":
            _ort_optimize(current, out, self.params.level)
        return StageOutput(out, {"nodes_before": float(before), "nodes_after_slim": float(slimmed),
                                 "nodes_after": float(node_count(out))})


def _ort_optimize(src: Path, dst: Path, level: str) -> None:
    """Let ONNX Runtime optimize `src` at `level` and save the optimized graph to `dst`."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                     "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                     "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    tmp = dst.with_name("optimized.onnx.tmp")
    opts.optimized_model_filepath = str(tmp)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    tmp.replace(dst)
