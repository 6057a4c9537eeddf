"""Measuring an artifact: quality, size, start-up, latency, throughput and peak memory on ONNX Runtime.

Every node is measured on ONNX Runtime, torch artifacts through an export, so a pruned torch model and
a quantized ONNX model are compared on the same engine, batch size and thread count. What each metric
means:

- size: `model_size_mb` (bytes on disk / 1e6), `model_size_gzip_mb` (gzip -9 of the file: a browser's
  download), `params` and `sparsity` (see onnx_utils).
- quality: the task's metrics (`accuracy`, macro `f1`) and `teacher_agreement`, the share of test inputs on
  which the model's top-1 class equals the baseline's (1.0 for the baseline itself).
- latency at batch 1, in this process, after `warmup` untimed calls: `latency_p50/p90/p95/p99_ms`,
  `latency_mean_ms` and `latency_cv` (sample std / mean over the `repeats` timed calls).
- `throughput_per_s`: samples per second at `throughput_batch`, from the median of `throughput_repeats`
  timed calls (the median, so one preempted call does not move it).
- start-up and memory, in a fresh child process: `load_ms`, `first_inference_ms`, `peak_rss_mb`,
  `peak_rss_delta_mb` (see probe).
"""

from __future__ import annotations

import functools
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator import faults
from orchestrator.artifacts.onnx_utils import gzip_size_bytes, onnx_param_count, size_bytes, sparsity
from orchestrator.errors import check_choice, check_range
from orchestrator.hashing import digest
from orchestrator.measure.probe import probe, session

EVAL_VERSION = "2"  # bump when what `measure` reports changes, so cached measurements are retaken

PAD_TO = ("max_length", "longest")  # eval.pad_to: the first is the default (static shapes)


@dataclass
class EvalSettings:
    """How every artifact is measured (the `eval` config block; its one definition, the schema reads it).

    threads, warmup, repeats: ONNX Runtime intra-op threads, untimed and timed calls at batch 1; batch_size:
    the batch quality is scored at (not timed); throughput_batch / throughput_repeats: the throughput call.
    targets: where each artifact is measured (the reference, ort, always; the others on request: see
    orchestrator.measure.targets); samples: the test examples the JavaScript targets score (their accuracy and
    max_abs_diff vs ONNX Runtime in Python). Each target with settings has its own block, `eval.<name>`, kept
    as plain data in `blocks` and read through `block`.
    pad_to (text tasks): max_length = every input padded to task.max_length (a static-shape deployment;
    latency on one test text); longest = each batch padded to its longest text, the way a service runs
    (batch-1 latency cycles through a seeded sample of `repeats` real test texts, so it follows their
    length distribution; `latency_seq_len` says how many tokens the timed inputs had on average).
    """

    threads: int = 1
    warmup: int = 20
    repeats: int = 200
    batch_size: int = 256
    throughput_batch: int = 64
    throughput_repeats: int = 20
    targets: list[str] = field(default_factory=lambda: ["ort"])
    samples: int = 200
    pad_to: str = "max_length"
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)  # target name -> its eval.<name> settings

    def __post_init__(self) -> None:  # (which names eval.targets may hold: config asks the target registry)
        check_range("samples", self.samples, 1, 100000)
        check_choice("pad_to", self.pad_to, list(PAD_TO))
        check_range("threads", self.threads, 1, 256)
        check_range("warmup", self.warmup, 0, 100000)
        check_range("repeats", self.repeats, 1, 1000000)
        check_range("batch_size", self.batch_size, 1, 65536)
        check_range("throughput_batch", self.throughput_batch, 1, 65536)
        check_range("throughput_repeats", self.throughput_repeats, 1, 1000000)

    @classmethod
    def from_config(cls, values: dict[str, Any]) -> EvalSettings:
        """From the resolved `eval` config block: its own keys, and every other key as a target's block."""
        own = {k: v for k, v in values.items() if k in cls.__dataclass_fields__ and k != "blocks"}
        blocks = {k: dict(v) for k, v in values.items() if k not in cls.__dataclass_fields__ and isinstance(v, dict)}
        return cls(**own, blocks=blocks)

    def block(self, name: str) -> dict[str, Any]:
        """Target `name`'s settings (`eval.<name>`); empty when the config has none."""
        return self.blocks.get(name, {})


ORT_FIELDS = ("threads", "warmup", "repeats", "batch_size", "throughput_batch", "throughput_repeats")


@functools.cache
def environment() -> dict[str, str]:
    """What the numbers depend on besides the settings: the ONNX Runtime version and the CPU model."""
    import onnxruntime as ort

    return {"onnxruntime": ort.__version__, "cpu": cpu_model()}


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else whatever the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def eval_hash(settings: EvalSettings) -> str:
    """Key of a set of measurements in the cache.

    The environment is part of it: numbers taken with another ONNX Runtime or on another CPU are
    retaken here rather than reused as if they had been measured here.
    """
    ort = {k: v for k, v in asdict(settings).items() if k in ORT_FIELDS}  # other targets are keyed on their own
    if settings.pad_to != "max_length":  # the default is keyed as before the setting existed
        ort["pad_to"] = settings.pad_to
    return digest({"settings": ort, "version": EVAL_VERSION, "environment": environment()})


def predict(task: Any, sess: Any, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) over the whole test split."""
    logits, labels = [], []
    for feeds, y in task.onnx_batches("test", batch_size):
        logits.append(task.onnx_logits(sess, feeds))
        labels.append(y)
    return np.concatenate(logits), np.concatenate(labels)


def quality(task: Any, sess: Any, batch_size: int) -> dict[str, float]:
    """The task's metrics over the whole test split."""
    return task.score(*predict(task, sess, batch_size))


def latency(task: Any, sess: Any, warmup: int, repeats: int, pad_to: str = "max_length") -> dict[str, float]:
    """Batch-1 latency statistics (ms) over `repeats` timed calls after `warmup` untimed ones.

    The calls cycle through `task.latency_feeds` (one input, or a seeded sample of real test texts each
    at its own length when `pad_to` is longest).
    """
    feeds = task.latency_feeds(pad_to, repeats)
    times = _timed_calls(sess, feeds, warmup, repeats)
    mean = float(times.mean())
    std = float(times.std(ddof=1)) if repeats > 1 else 0.0
    out = {f"latency_p{q}_ms": float(np.percentile(times, q)) for q in (50, 90, 95, 99)}
    if task.variable_length:  # says which padding the number was taken at
        timed = [feeds[i % len(feeds)] for i in range(repeats)]
        out["latency_seq_len"] = float(np.mean([next(iter(f.values())).shape[-1] for f in timed]))
    return {**out, "latency_mean_ms": mean, "latency_cv": std / mean if mean > 0 else 0.0}


def throughput(task: Any, sess: Any, batch: int, repeats: int, pad_to: str = "max_length") -> dict[str, float]:
    """Samples per second at `batch` (capped by the test split's size), from the median call time."""
    # pad_to reaches only text tasks (config refuses longest elsewhere), so older task plugins still work
    batches = task.onnx_batches("test", batch, pad_to=pad_to) if pad_to != "max_length" else \
        task.onnx_batches("test", batch)
    feeds, labels = next(batches)
    times = _timed_calls(sess, [feeds], 1, repeats)
    return {"throughput_per_s": len(labels) / (float(np.median(times)) / 1e3)}


def _timed_calls(sess: Any, feeds: list[dict[str, np.ndarray]], warmup: int, repeats: int) -> np.ndarray:
    """Wall time (ms) of `repeats` calls, each timed alone and cycling through `feeds`, after `warmup`
    untimed calls (at least one per input, so each input shape is warm before it is timed)."""
    for i in range(max(warmup, len(feeds) if warmup else 0)):
        sess.run(None, feeds[i % len(feeds)])
    times = np.empty(repeats)
    for i in range(repeats):
        one = feeds[i % len(feeds)]
        start = time.perf_counter()
        sess.run(None, one)
        times[i] = (time.perf_counter() - start) * 1e3
    return times


_REFERENCE: dict[tuple, np.ndarray] = {}


def reference_predictions(task: Any, path: Path, settings: EvalSettings) -> np.ndarray:
    """Top-1 predictions of the baseline ONNX at `path`, computed once per process, task and file version."""
    key = (str(path), path.stat().st_mtime_ns, settings.batch_size, id(task))
    if key not in _REFERENCE:
        _REFERENCE[key] = predict(task, session(path, settings.threads), settings.batch_size)[0].argmax(-1)
    return _REFERENCE[key]


def measure_onnx(task: Any, path: Path, settings: EvalSettings, reference: Path | None = None) -> dict[str, float]:
    """All `ort` metrics of one ONNX model file, as the task measures them (classifiers: measure_classifier)."""
    return task.measure_onnx(path, settings, reference)


def measure_classifier(task: Any, path: Path, settings: EvalSettings,
                       reference: Path | None = None) -> dict[str, float]:
    """All metrics of one classifier's ONNX model file (see the module doc).

    `reference` is the baseline's ONNX file, for `teacher_agreement`; None means `path` is the baseline.
    """
    from orchestrator.measure.metrics import agreement

    sess = session(path, settings.threads)
    metrics = {"model_size_mb": size_bytes(path) / 1e6, "model_size_gzip_mb": gzip_size_bytes(path) / 1e6,
               "params": float(onnx_param_count(path)), "sparsity": sparsity(path)}
    logits, labels = predict(task, sess, settings.batch_size)
    metrics.update(task.score(logits, labels))
    metrics["teacher_agreement"] = 1.0 if reference is None else agreement(
        logits.argmax(-1), reference_predictions(task, reference, settings))
    faults.point("measure:mid")
    metrics.update(latency(task, sess, settings.warmup, settings.repeats, settings.pad_to))
    metrics.update(throughput(task, sess, settings.throughput_batch, settings.throughput_repeats, settings.pad_to))
    del sess  # released before the child starts, so the two do not compete for memory
    one, _ = next(task.onnx_batches("test", 1))
    big, _ = next(task.onnx_batches("test", settings.throughput_batch))
    metrics.update(probe(path, one, big, settings.threads))
    return metrics


def onnx_for(task: Any, domain: str, model_path: Path, folder: Path, export_params: dict[str, Any]) -> Path:
    """The ONNX file that represents an artifact: itself, or an export of a torch model into `folder`."""
    if domain == "onnx":
        return model_path
    target = folder / "measured.onnx"
    if not target.exists():
        import os

        from orchestrator.artifacts import torch_io
        from orchestrator.artifacts.export_check import check_export

        model = torch_io.load(model_path, task)
        partial = folder / f"measured.{os.getpid()}.onnx.part"  # renamed once whole: never read half-written
        try:
            task.export(model, partial, export_params.get("opset", 17), export_params.get("exporter", "torchscript"))
            faults.point("export:written")
            check_export(task, model, partial, export_params.get("max_abs_diff", 1e-3))  # never measure a bad export
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, target)
    return target

