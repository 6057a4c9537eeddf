"""`ort`: ONNX Runtime in Python on this host (quality on the whole test split, latency, throughput, memory).

The reference target: measured for every node, whatever eval.targets says, because quality, the gate and the
report's baseline comparisons come from it. Its metric names carry no prefix and its settings are the top-level
`eval.*` keys; see orchestrator.measure.evaluate for what each metric means. Its columns are the report's own
tables, so it declares none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.measure.targets.base import SIZE, Subject, Target


class OrtTarget(Target):
    """ONNX Runtime (Python), `eval.threads` intra-op threads."""

    name = "ort"
    title = "ONNX Runtime (Python)"

    @property
    def prefix(self) -> str:
        return ""

    def ratios(self) -> dict[str, tuple[str, bool]]:
        return {"speedup": (self.latency_metric, True), "size_ratio": (SIZE, False)}

    def eval_key(self, settings: Any, node: Subject) -> str:
        from orchestrator.measure.evaluate import eval_hash

        return eval_hash(settings)

    def measure(self, model: Path, task: Any, settings: Any, reference: Path | None = None) -> dict[str, float]:
        from orchestrator.measure.evaluate import measure_onnx

        return measure_onnx(task, model, settings, reference)
