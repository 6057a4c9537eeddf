"""Batch-1 latency of ONNX files of one task, interleaved over rounds, and where the time goes by operator type.

Each round times every file once with the sweep's own latency measurement (orchestrator.measure.evaluate.latency:
the task's latency input, `--warmup` untimed calls, `--repeats` timed ones, `--threads` intra-op threads); the
files take turns, so a slow spell of the machine hits them all. Printed per file: the median p50 over the rounds,
its spread, the ratio to the first file, and, from one ONNX Runtime profile of the same calls, the milliseconds
per call of the operator types that take the most (what ORT runs after optimizing the graph: MatMulIntegerToFloat,
QLinearMatMul, DynamicQuantizeMatMul, ...). Usage (the nodes of a sweep lie in the cache):

    python benchmarks/onnx_speed.py --task tweets dynamic=.cache/orchestrator/nodes/<key>/model.onnx \\
        static=.cache/orchestrator/nodes/<key>/model.onnx --rounds 5 task.train_dtype=float32
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_nncf import build_task  # noqa: E402


def session(path: Path, threads: int, profile: str | None = None) -> Any:
    """An ONNX Runtime CPU session as the measurement opens one, optionally profiling into `profile`*."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_by_op(task: Any, path: Path, threads: int, repeats: int, top: int) -> list[tuple[str, float]]:
    """Milliseconds per call of the `top` operator types over `repeats` profiled calls (after one warm-up)."""
    feeds = task.latency_feeds("max_length", repeats)
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(path, threads, str(Path(tmp) / "profile"))
        sess.run(None, feeds[0])
        for i in range(repeats):
            sess.run(None, feeds[i % len(feeds)])
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1e3 / (repeats + 1)
    return per_op.most_common(top)


def main(argv: list[str] | None = None) -> int:
    from orchestrator.measure.evaluate import latency

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="NAME=model.onnx, then task.KEY=VALUE overrides")
    ap.add_argument("--task", default="tweets")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--top", type=int, default=6, help="operator types shown per file")
    args = ap.parse_intermixed_args(argv)
    files = {k: Path(v) for k, _, v in (f.partition("=") for f in args.files if not f.startswith("task."))}
    task = build_task(args.task, [f for f in args.files if f.startswith("task.")])
    p50: dict[str, list[float]] = {name: [] for name in files}
    for _ in range(args.rounds):
        for name, path in files.items():
            p50[name].append(latency(task, session(path, args.threads), args.warmup, args.repeats)["latency_p50_ms"])
    first = statistics.median(next(iter(p50.values())))
    print(f"{task.name}: batch-1 p50 over {args.rounds} interleaved rounds of {args.repeats} calls, "
          f"{args.threads} thread(s), on {os.cpu_count()} cores")
    for name, path in files.items():
        median = statistics.median(p50[name])
        ops = ", ".join(f"{op} {ms:.2f}" for op, ms in time_by_op(task, path, args.threads, args.repeats, args.top))
        print(f"{name}: {median:.3f} ms (rounds {min(p50[name]):.3f}-{max(p50[name]):.3f}, "
              f"{median / first:.3f}x the first); ms per call by operator: {ops}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
