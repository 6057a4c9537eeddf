"""Start-up time and peak memory of one ONNX model, measured in a fresh child process.

Peak RSS is a process-wide high-water mark, so measuring it in the sweep's own process would report
whatever the biggest earlier model (or torch training) left behind. Each node therefore gets a child:
`python -m orchestrator.measure.probe MODEL FEEDS THREADS` imports numpy and onnxruntime only, creates the
session, runs it, and prints one JSON line.

What the numbers include:
- `load_ms`: creating the InferenceSession (reading the file, graph optimisation, allocating weights) in a
  process that has imported onnxruntime but never created a session: a cold start with a warm OS file cache.
- `first_inference_ms`: the first batch-1 call after that (lazy allocations, kernel selection).
- `peak_rss_mb`: the child's peak resident memory. It includes the interpreter and the numpy + onnxruntime
  imports (tens of MB, the same for every model), the session, and running at batch 1 and at the
  throughput batch.
- `peak_rss_delta_mb`: `peak_rss_mb` minus the peak right after those imports (and after reading the
  input feeds): the model's own share.

This module imports nothing heavy at module level, so the child's baseline stays the bare runtime.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.artifacts.memory import peak_rss_mb  # re-exported: every child reports its peak this way
from orchestrator.artifacts.onnx_utils import session  # re-exported: the one way to open a model

RUNS_AFTER_FIRST = 3  # a few more calls per batch size, so steady-state buffers are part of the peak


def probe(path: Path, feeds_one: dict[str, Any], feeds_big: dict[str, Any], threads: int,
          timeout: float = 300) -> dict[str, float]:
    """Run the child on `path` with batch-1 and large-batch feeds; its metrics (see the module doc)."""
    import numpy as np

    names = list(feeds_one)
    with tempfile.TemporaryDirectory() as tmp:
        feeds = Path(tmp) / "feeds.npz"
        np.savez(feeds, **{f"one{i}": feeds_one[n] for i, n in enumerate(names)},
                 **{f"big{i}": feeds_big[n] for i, n in enumerate(names)})
        cmd = [sys.executable, "-m", "orchestrator.measure.probe", str(path), str(feeds), str(threads),
               json.dumps(names)]
        # the child imports this very package, wherever it lies (installed or not)
        paths = [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    """Child entry point: MODEL FEEDS THREADS NAMES_JSON -> one JSON line on stdout."""
    import numpy as np
    import onnxruntime  # noqa: F401  (imported before the baseline reading: it is not the model's share)

    model, feeds_path, threads, names = argv[0], argv[1], int(argv[2]), json.loads(argv[3])
    with np.load(feeds_path) as data:
        one = {n: data[f"one{i}"] for i, n in enumerate(names)}
        big = {n: data[f"big{i}"] for i, n in enumerate(names)}
    base = peak_rss_mb()
    start = time.perf_counter()
    sess = session(model, threads)
    load_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    sess.run(None, one)
    first_ms = (time.perf_counter() - start) * 1e3
    for feeds in (one, big):
        for _ in range(RUNS_AFTER_FIRST):
            sess.run(None, feeds)
    peak = peak_rss_mb()
    print(json.dumps({"load_ms": load_ms, "first_inference_ms": first_ms, "peak_rss_mb": peak,
                      "peak_rss_delta_mb": peak - base}))


if __name__ == "__main__":
    main(sys.argv[1:])
