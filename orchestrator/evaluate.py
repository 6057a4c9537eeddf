"""Measuring an artifact: quality on the test split, size on disk, parameters and ONNX Runtime latency.

Every node is measured on ONNX Runtime, torch artifacts through an export, so a pruned torch model and
a quantized ONNX model are compared on the same engine, batch size and thread count.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.onnx_utils import onnx_param_count, size_bytes
from orchestrator.plan import digest

EVAL_VERSION = "1"  # bump when what `measure` reports changes, so cached measurements are retaken


@dataclass
class EvalSettings:
    """Mirror of config.EvalConfig: what a measurement depends on."""

    threads: int = 1
    warmup: int = 20
    repeats: int = 200
    batch_size: int = 256


def eval_hash(settings: EvalSettings) -> str:
    """Key of a set of measurements in the cache."""
    return digest({"settings": asdict(settings), "version": EVAL_VERSION})


def session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with a fixed intra-op thread count (sequential execution)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def quality(task: Any, sess: Any, batch_size: int) -> dict[str, float]:
    """The task's metrics over the whole test split."""
    logits, labels = [], []
    for feeds, y in task.onnx_batches("test", batch_size):
        logits.append(sess.run(None, feeds)[0])
        labels.append(y)
    return task.score(np.concatenate(logits), np.concatenate(labels))


def latency(task: Any, sess: Any, warmup: int, repeats: int) -> dict[str, float]:
    """Batch-1 latency percentiles (ms) over `repeats` timed calls after `warmup` untimed ones."""
    feeds, _ = next(task.onnx_batches("test", 1))
    for _ in range(warmup):
        sess.run(None, feeds)
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        sess.run(None, feeds)
        times[i] = (time.perf_counter() - start) * 1e3
    return {"latency_p50_ms": float(np.percentile(times, 50)),
            "latency_p95_ms": float(np.percentile(times, 95))}


def measure_onnx(task: Any, path: Path, settings: EvalSettings) -> dict[str, float]:
    """All metrics of one ONNX model file."""
    sess = session(path, settings.threads)
    metrics = {"model_size_mb": size_bytes(path) / 1e6, "params": float(onnx_param_count(path))}
    metrics.update(quality(task, sess, settings.batch_size))
    metrics.update(latency(task, sess, settings.warmup, settings.repeats))
    return metrics


def onnx_for(task: Any, domain: str, model_path: Path, folder: Path, export_params: dict[str, Any]) -> Path:
    """The ONNX file that represents an artifact: itself, or an export of a torch model into `folder`."""
    if domain == "onnx":
        return model_path
    target = folder / "measured.onnx"
    if not target.exists():
        import os

        import torch

        from orchestrator.stages.export import check_export

        model = torch.load(model_path, weights_only=False)
        partial = folder / f"measured.{os.getpid()}.onnx.part"  # renamed once whole: never read half-written
        task.export(model, partial, export_params.get("opset", 17), export_params.get("exporter", "torchscript"))
        check_export(task, model, partial, export_params.get("max_abs_diff", 1e-3))  # never measure a bad export
        os.replace(partial, target)
    return target


def torch_param_count(model_path: Path) -> int:
    """Parameters of a saved torch module."""
    import torch

    model = torch.load(model_path, weights_only=False)
    return int(sum(p.numel() for p in model.parameters()))
