"""How repeatable is latency_p50_ms? Measure the same ONNX file in two separate invocations and compare.

Each invocation is a fresh Python process that does exactly what a sweep does for latency: an ONNX Runtime
session with the configured thread count, `warmup` untimed calls, then `repeats` timed batch-1 calls
(orchestrator.measure.evaluate.latency). Prints both p50s, their ratio and each run's coefficient of variation.

    python benchmarks/measure_repeatability.py                 # a freshly exported digits CNN
    python benchmarks/measure_repeatability.py model.onnx      # any digits-shaped model (input 1x1x8x8)
    python benchmarks/measure_repeatability.py --width 128 --repeats 2000

Latency does not depend on the weights' values, so the default model is exported untrained (no training
time). Run it on a quiet machine: other processes competing for the cores show up as a higher CV.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(model: str, threads: int, warmup: int, repeats: int) -> None:
    """One invocation: measure and print the latency statistics as JSON."""
    from orchestrator.measure.evaluate import latency, session
    from orchestrator.tasks.digits import Digits, DigitsParams

    task = Digits(DigitsParams(), seed=0)
    print(json.dumps(latency(task, session(model, threads), warmup, repeats)))


def export_digits_cnn(path: Path, width: int, hidden: int) -> None:
    """An untrained digits CNN as ONNX (shape and cost of a real one)."""
    from orchestrator.tasks.digits import Digits, DigitsParams, build_cnn

    Digits(DigitsParams(), seed=0).export(build_cnn(width, hidden).eval(), path, 17, "torchscript")


def main() -> None:
    """Two invocations on one file, then the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="ONNX file with a 1x1x8x8 'input' (default: export a digits CNN)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--width", type=int, default=32, help="conv width of the exported CNN")
    ap.add_argument("--hidden", type=int, default=128, help="hidden units of the exported CNN")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.model, args.threads, args.warmup, args.repeats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(Path(tmp) / "digits.onnx")
        if not args.model:
            export_digits_cnn(Path(model), args.width, args.hidden)
        cmd = [sys.executable, __file__, model, "--child", "--threads", str(args.threads),
               "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
        runs = [json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
                for _ in range(2)]
    p50 = [r["latency_p50_ms"] for r in runs]
    ratio = max(p50) / min(p50)
    print(f"model: {args.model or f'digits CNN width={args.width} hidden={args.hidden} (untrained)'}; "
          f"threads={args.threads} warmup={args.warmup} repeats={args.repeats}")
    for i, r in enumerate(runs, 1):
        print(f"invocation {i}: p50 {r['latency_p50_ms']:.4f} ms  p99 {r['latency_p99_ms']:.4f} ms  "
              f"mean {r['latency_mean_ms']:.4f} ms  cv {r['latency_cv']:.3f}")
    print(f"p50 ratio (slower / faster): {ratio:.3f} -> {'within' if ratio <= 1.15 else 'NOT within'} 15%")


if __name__ == "__main__":
    main()
