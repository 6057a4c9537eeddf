"""The export check: an exported ONNX file must compute what its torch model computes.

The `export` stage runs it on every export, and measurement runs it on the export it makes of a torch
artifact, so both import it from here: the largest |ONNX - torch| logit on a few test examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHECK_EXAMPLES = 8


class ExportMismatch(RuntimeError):
    """The exported ONNX model does not compute what the torch model computes."""


def export_diff(task: Any, model: Any, path: Path, examples: int = CHECK_EXAMPLES) -> float:
    """Largest |ONNX - torch| logit over the first `examples` test examples (fewer if the task says so)."""
    import numpy as np
    import torch

    from orchestrator.artifacts.onnx_utils import session

    examples = min(examples, task.check_examples)
    inputs, _ = next(task.batches("test", examples))
    feeds, _ = next(task.onnx_batches("test", examples))
    with torch.no_grad():
        expected = task.forward(model.eval(), inputs).float().numpy()
    got = task.onnx_logits(session(path, 1), feeds)
    return float(np.abs(got.astype(np.float64) - expected).max())


def check_export(task: Any, model: Any, path: Path, limit: float) -> float:
    """export_diff, raising ExportMismatch above `limit`."""
    diff = export_diff(task, model, path)
    if not diff <= limit:  # also catches NaN
        raise ExportMismatch(f"exported ONNX differs from the torch model: max |logit difference| {diff:.3g} "
                             f"> stages.export.max_abs_diff={limit:g}")
    return diff
