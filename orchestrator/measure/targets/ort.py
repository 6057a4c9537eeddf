"""`ort`: ONNX Runtime in Python on this host (quality on the whole test split, latency, throughput, memory).

The default target and the reference of the others. Its metric names carry no prefix; see
orchestrator.measure.evaluate for what each one means. It is measured for every node, whatever eval.targets says,
because quality, the gate and the report's baseline comparisons come from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.measure.targets.base import Target


class OrtTarget(Target):
    """ONNX Runtime (Python), `eval.threads` intra-op threads."""

    name = "ort"

    def measure(self, model: Path, task: Any, settings: Any, reference: Path | None = None) -> dict[str, float]:
        from orchestrator.measure.evaluate import measure_onnx

        return measure_onnx(task, model, settings, reference)
