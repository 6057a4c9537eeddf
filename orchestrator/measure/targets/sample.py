"""The inputs every non-Python target is fed, and ONNX Runtime's own answers on them.

A fixed subset of the task's test split at batch 1 (the first `eval.samples` examples), so every target
and every node sees the same tensors; the Python ONNX Runtime logits on them are the reference that
`<target>_max_abs_diff` is measured against, and the labels give `<target>_accuracy`.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import ConfigError


def check_plain_inputs(task_cls: type, settings: Any) -> None:
    """The JavaScript harnesses feed plain test examples; a KV-cache LM graph needs more inputs than that."""
    if task_cls.kv_cache:
        extra = [n for n in settings.targets if n != "ort"]
        raise ConfigError("eval.targets", extra, f"task {task_cls.name!r} is a language model, measured on ort "
                          "only; use eval.targets=[ort]")


def subset(task: Any, n: int) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """The first `n` test examples as batch-1 ONNX feeds, and their labels."""
    feeds, labels = [], []
    for one, label in task.onnx_batches("test", 1):
        feeds.append(one)
        labels.append(np.asarray(label).reshape(-1)[0])
        if len(feeds) >= n:
            break
    return feeds, np.asarray(labels)


def reference(model: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """ONNX Runtime (Python, 1 thread) logits for each feed: what the other runtimes must reproduce."""
    from orchestrator.measure.probe import session

    sess = session(model, 1)
    return np.stack([np.asarray(sess.run(None, f)[0], dtype=np.float64).reshape(-1) for f in feeds])


def encode(feeds: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Feeds as JSON-able tensors (dtype, shape, base64 little-endian bytes) for a JavaScript harness."""
    return {name: {"dtype": str(a.dtype), "shape": list(a.shape),
                   "b64": base64.b64encode(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes())
                   .decode()} for name, a in feeds.items()}


def quality(prefix: str, logits: list[list[float]], ref: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """`<prefix>_accuracy` on the subset, the Python reference's accuracy on the same subset
    (`<prefix>_ref_accuracy`), and `<prefix>_max_abs_diff` against the Python reference."""
    got = np.asarray(logits, dtype=np.float64).reshape(ref.shape)
    return {f"{prefix}_accuracy": float((got.argmax(-1) == labels).mean()),
            f"{prefix}_ref_accuracy": float((ref.argmax(-1) == labels).mean()),
            f"{prefix}_max_abs_diff": float(np.abs(got - ref).max()),
            f"{prefix}_samples": float(len(labels))}


def latency(prefix: str, times_ms: list[float]) -> dict[str, float]:
    """p50 / p95 / mean / cv of timed calls (ms)."""
    t = np.asarray(times_ms, dtype=np.float64)
    mean = float(t.mean())
    std = float(t.std(ddof=1)) if len(t) > 1 else 0.0
    return {f"{prefix}_latency_p50_ms": float(np.percentile(t, 50)),
            f"{prefix}_latency_p95_ms": float(np.percentile(t, 95)),
            f"{prefix}_latency_mean_ms": mean, f"{prefix}_latency_cv": std / mean if mean > 0 else 0.0}
