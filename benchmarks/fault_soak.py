"""Kill the default sweep with SIGKILL at random moments, rerun after each kill, and compare with a clean run.

The test suite kills at named points (tests/test_faults.py); this is the longer, random version: each
cycle starts the sweep and SIGKILLs it after a random delay, then the sweep is rerun to completion and
its leaf metrics (latency aside) are compared with an uninterrupted run's. Prints the kills, whether the
cache held any partial node after each, whether any MLflow run was left RUNNING, and the verdict.

    python benchmarks/fault_soak.py [--cycles 30] [--max-delay 25] [--seed 0] [--override KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STABLE = ("accuracy", "f1", "model_size_mb", "params", "sparsity", "teacher_agreement")


def command(store: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "orchestrator", "+recipe=pkdq", f"cache.dir={store / 'cache'}",
            f"tracking.uri=sqlite:///{store / 'mlflow.db'}", f"tracking.artifact_root={store / 'art'}", *overrides]


def leaves(store: Path) -> tuple[list[dict], int]:
    """(per finished parent run: {leaf name: stable metrics}, runs left RUNNING)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pkdq")
    runs = client.search_runs([exp.experiment_id], max_results=10000)
    out = []
    for parent in (r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.info.status == "FINISHED"):
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                and r.data.tags.get("orchestrator.leaf") == "true"]
        out.append({r.info.run_name: {m: r.data.metrics.get(m) for m in STABLE} for r in kids})
    return out, sum(r.info.status == "RUNNING" for r in runs)


def partial_nodes(store: Path) -> int:
    from orchestrator.engine.cache import Cache

    cache = Cache(store / "cache")
    bad = sum(not cache.has(p.name) for p in (store / "cache" / "nodes").iterdir())
    junk = sum(1 for p in (store / "cache" / "nodes").rglob("*") if p.suffix in (".part", ".tmp"))
    return bad + junk + sum(1 for _ in (store / "cache" / "tmp").iterdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--max-delay", type=float, default=25.0, help="seconds; each kill lands in [0.5, this]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--override", action="append", default=[])
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        clean, soak = Path(tmp) / "clean", Path(tmp) / "soak"
        start = time.perf_counter()
        subprocess.run(command(clean, args.override), cwd=ROOT, capture_output=True, check=True)
        print(f"clean run: {time.perf_counter() - start:.1f}s")
        [reference], _ = leaves(clean)
        kills = 0
        for cycle in range(args.cycles):
            delay = rng.uniform(0.5, args.max_delay)
            proc = subprocess.Popen(command(soak, args.override), cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                proc.wait(delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
            print(f"cycle {cycle + 1:>3}: {'killed' if proc.returncode == -9 else 'finished'} after "
                  f"{delay:5.1f}s, partial nodes in the cache: {partial_nodes(soak)}")
        final = subprocess.run(command(soak, args.override), cwd=ROOT, capture_output=True, text=True)
        finished, running = leaves(soak)
        same = all(sweep == reference for sweep in finished)
        print(f"{kills} kills in {args.cycles} cycles; final run exit {final.returncode}; "
              f"{len(finished)} finished invocations, every one with the clean run's leaf metrics: {same}; "
              f"runs left RUNNING: {running}; partial nodes: {partial_nodes(soak)}")
        return 0 if same and running == 0 and final.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
