"""Static int8 with accuracy control, ours and NNCF's, side by side on one exported ONNX model.

Both start from the same fp32 ONNX file (an `export` node of a sweep's cache), calibrate on the same rows (the
first `calib_samples` of the task's `calib` split, from training data), validate on the same rows (the task's
validation split, `val_samples` of them) under the same bound (`--max-drop`, accuracy as a fraction), and are
measured the same way (the task's own `ort` measurement: test accuracy, batch-1 latency at 1 thread, size):

- ours: the `quantize` stage, `mode=int8 method=static max_loss=MAX_DROP` (restores the most sensitive groups
  to float until the validation drop holds), per-tensor weight scales (the stage's default) or, with
  `--per-channel`, one per output channel (NNCF's default);
- NNCF: `nncf.quantize_with_accuracy_control` (its ONNX backend: ranks quantizer groups by their contribution
  to the drop and reverts the worst to float), `model_type=TRANSFORMER` for encoders.

NNCF is a benchmark-only dependency (`pip install -e ".[bench]"`, pinned). Wall time is each side's
quantization + control, measured here in one process, one after the other. Run a sweep first so the export
node exists, e.g. MiniLM on tweets:

    python -m orchestrator task=tweets task.train_dtype=float32 'pipeline=[quantize]' stages.quantize.method=static
    python benchmarks/vs_nncf.py --cache .cache/orchestrator --task tweets task.train_dtype=float32
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ordering_table import table as markdown_table  # noqa: E402

COLUMNS = ["method", "accuracy", "drop (points)", "p50 ms", "MB", "wall s", "val accuracy"]
FORMATS = {"accuracy": "{:.4f}", "drop (points)": "{:.2f}", "p50 ms": "{:.3f}", "MB": "{:.1f}", "wall s": "{:.0f}",
           "val accuracy": "{:.4f}"}


def build_task(name: str, overrides: list[str]) -> Any:
    """The task `name` with `task.KEY=VALUE` overrides (values parsed as JSON where they parse), seed 0."""
    from orchestrator.tasks import TASKS

    values: dict[str, Any] = {}
    for item in overrides:
        key, _, value = item.removeprefix("task.").partition("=")
        try:
            values[key] = json.loads(value)
        except ValueError:
            values[key] = value
    cls = TASKS[name]
    return cls(cls.Params(**values), 0)


def export_of(cache: Path, task: Any) -> Path:
    """The fp32 ONNX of the task's baseline: the `export` node whose parent is the baseline node of these
    task params (the newest, if several)."""
    from dataclasses import asdict

    nodes = cache / "nodes"
    baselines = set()
    for meta_file in nodes.glob("*/meta.json"):
        meta = json.loads(meta_file.read_text())
        if meta.get("stage") == "baseline" and meta.get("params") == asdict(task.params):
            baselines.add(meta_file.parent.name)
    found = [m.parent / "model.onnx" for m in nodes.glob("*/meta.json")
             if (meta := json.loads(m.read_text())).get("stage") == "export" and meta.get("parent") in baselines]
    if not found:
        raise SystemExit(f"no export of a {task.name} baseline with these params in {cache}: run the sweep first")
    return max(found, key=lambda p: p.stat().st_mtime)


def correct(task: Any, model_bytes: bytes, split: str, limit: int) -> Any:
    """Whether an ONNX model (serialized) gets each of the first `limit` examples of `split` right (a bool
    array), 1 thread."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    right, seen = [], 0
    for feeds, labels in task.onnx_batches(split, 64):
        take = min(len(labels), limit - seen)
        logits = task.onnx_logits(sess, {k: v[:take] for k, v in feeds.items()})
        right.append(np.argmax(logits, -1) == labels[:take])
        seen += take
        if seen >= limit:
            break
    return np.concatenate(right)


def accuracy(task: Any, model_bytes: bytes, split: str, limit: int) -> float:
    """Accuracy of an ONNX model (serialized) on the first `limit` examples of `split`, 1 thread."""
    return float(correct(task, model_bytes, split, limit).mean())


def paired(ours: Any, theirs: Any) -> str:
    """How two models' right answers on the same rows differ, and whether that is more than chance: the rows
    only ours gets right, only theirs, and the exact two-sided McNemar p (a binomial test on those rows)."""
    from math import comb

    only_ours, only_theirs = int((ours & ~theirs).sum()), int((theirs & ~ours).sum())
    n, k = only_ours + only_theirs, min(only_ours, only_theirs)
    p = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return (f"on the same {len(ours)} rows: {only_ours} right only by ours, {only_theirs} right only by NNCF "
            f"(exact McNemar p = {p:.2f})")


def ours(task: Any, fp32: Path, work: Path, max_drop: float, calib: int, val: int,
         per_channel: bool = False) -> tuple[Path, float]:
    from orchestrator.stages import StageContext
    from orchestrator.stages.quantize import Quantize, QuantizeParams

    start = time.perf_counter()
    params = QuantizeParams(mode="int8", method="static", max_loss=max_drop, calib_samples=calib, val_samples=val,
                            per_channel=per_channel)
    out = Quantize(params).run(StageContext(task=task, work_dir=work, seed=0, teacher=lambda: None), fp32)
    return out.model, time.perf_counter() - start


def nncf_side(task: Any, fp32: Path, work: Path, max_drop: float, calib: int, val: int,
              per_channel: bool = False) -> tuple[Path, float]:
    """NNCF's own defaults (weights per channel, whatever `per_channel` says: it is ours)."""
    import nncf
    import onnx

    from orchestrator.stages.accuracy_control import validation_split

    split = validation_split(task)
    calib_items = [feeds for feeds, _ in islice(task.onnx_batches("calib", 1), calib)]
    val_items = list(islice(task.onnx_batches(split, 1), val))

    def validate(model: Any, items: Any) -> tuple[float, list[float]]:
        import numpy as np
        import onnxruntime as ort

        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        per = [float(np.argmax(task.onnx_logits(sess, feeds), -1)[0] == labels[0]) for feeds, labels in items]
        return float(np.mean(per)), per

    start = time.perf_counter()
    quantized = nncf.quantize_with_accuracy_control(
        onnx.load(str(fp32)), nncf.Dataset(calib_items), nncf.Dataset(val_items), validate, max_drop=max_drop,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=calib, model_type=nncf.ModelType.TRANSFORMER)
    path = work / "nncf.onnx"
    onnx.save(quantized, str(path))
    return path, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from orchestrator.measure.evaluate import EvalSettings, measure_onnx
    from orchestrator.stages.accuracy_control import validation_split

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(".cache/orchestrator"))
    ap.add_argument("--task", default="tweets")
    ap.add_argument("--max-drop", type=float, default=0.01)
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--val-samples", type=int, default=512)
    ap.add_argument("--per-channel", action="store_true",
                    help="ours with one weight scale per output channel, as NNCF quantizes weights")
    ap.add_argument("overrides", nargs="*", help="task.KEY=VALUE, as given to the sweep")
    args = ap.parse_args(argv)
    task = build_task(args.task, args.overrides)
    fp32 = export_of(args.cache, task)
    settings = EvalSettings(threads=1)
    rows, right = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        base = measure_onnx(task, fp32, settings)
        split = validation_split(task)
        base_val = accuracy(task, fp32.read_bytes(), split, args.val_samples)
        rows.append({"method": "fp32", "accuracy": base["accuracy"], "drop (points)": 0.0,
                     "p50 ms": base["latency_p50_ms"], "MB": base["model_size_mb"], "wall s": None,
                     "val accuracy": base_val})
        for name, side in (("ours: quantize static, max_loss", ours), ("NNCF quantize_with_accuracy_control",
                                                                          nncf_side)):
            work = Path(tmp) / name.split(":")[0].split()[0]
            work.mkdir()
            path, wall = side(task, fp32, work, args.max_drop, args.calib_samples, args.val_samples,
                              args.per_channel)
            m, model = measure_onnx(task, path, settings), path.read_bytes()
            rows.append({"method": name, "accuracy": m["accuracy"],
                         "drop (points)": (base["accuracy"] - m["accuracy"]) * 100, "p50 ms": m["latency_p50_ms"],
                         "MB": m["model_size_mb"], "wall s": wall,
                         "val accuracy": accuracy(task, model, split, args.val_samples)})
            right[name] = correct(task, model, "test", 10**9)
    print(f"{task.name}: fp32 {fp32}, max drop {args.max_drop} on {args.val_samples} {split} examples, "
          f"calibration on {args.calib_samples} calib examples, 1 thread")
    print(markdown_table(rows, COLUMNS, FORMATS))
    print("test split, " + paired(*right.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
