"""The ordering study on the local executor, the process pool and Ray (a local Ray with the same cores).

Prints each one's wall time from an empty cache (tracking off, so it measures compute and scheduling),
their ratios, and the Ray executor's scheduling overhead per node: a plan of the same shape whose nodes
do nothing, run through Ray and through the local executor.

    python benchmarks/ray_vs_local.py [--cpus 2] [overrides...]   (default: +recipe=ordering_study)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def sweep(overrides: list[str], executor: list[str], cache: str) -> tuple[float, str]:
    """Wall seconds of one CLI run and its summary line."""
    cmd = [sys.executable, "-m", "orchestrator", *overrides, *executor, f"cache.dir={cache}", "tracking.enabled=false"]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(executor)} failed:\n{out.stderr[-3000:]}")
    return wall, next(line for line in out.stdout.splitlines() if re.match(r"\d+ unique nodes", line))


def _nothing(job):
    from orchestrator.engine.executors.base import NodeResult

    return NodeResult(job.node.key, "done")


def overhead(overrides: list[str], cpus: int) -> tuple[int, float, float]:
    """(nodes, seconds per node on Ray, on the local executor) for no-op nodes of the study's DAG."""
    from conftest import compose
    from ray import cloudpickle

    from orchestrator.engine.execute import execute
    from orchestrator.engine.executors import executor_for
    from orchestrator.engine.plan import plan
    from orchestrator.stages import REGISTRY
    from orchestrator.tasks import TASKS

    the_plan = plan(compose(*overrides), REGISTRY, TASKS)

    def job(node):
        from orchestrator.engine.executors.base import Job

        return Job(node, "", {}, 0, "", None, {})  # type: ignore[arg-type]

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    timings = []
    for cfg in ({"kind": "ray", "num_cpus": cpus}, {"kind": "local"}):
        executor = executor_for(cfg)
        executor.prepare({})  # connecting is start-up, not scheduling
        start = time.perf_counter()
        execute(the_plan, job, lambda *a: None, lambda n, r: None, compute_fn=_nothing, executor=executor)
        timings.append((time.perf_counter() - start) / len(the_plan.nodes))
        executor.close()
    return len(the_plan.nodes), timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpus", type=int, default=2)
    args, overrides = parser.parse_known_args()
    overrides = overrides or ["+recipe=ordering_study"]
    runs = {"local": ["executor=local"], f"pool ({args.cpus} workers)": ["executor=pool",
                                                                        f"executor.workers={args.cpus}"],
            f"ray ({args.cpus} CPUs)": ["executor=ray", f"executor.num_cpus={args.cpus}"]}
    walls = {}
    for name, executor in runs.items():
        with tempfile.TemporaryDirectory() as tmp:
            walls[name], summary = sweep(overrides, executor, f"{tmp}/cache")
        print(f"{name:<18} {walls[name]:7.1f} s   {summary}", flush=True)
    local = walls["local"]
    for name, wall in walls.items():
        print(f"{name:<18} local / this = {local / wall:.2f}x")
    nodes, ray_s, local_s = overhead(overrides, args.cpus)
    print(f"scheduling overhead per node ({nodes} no-op nodes): ray {ray_s * 1000:.1f} ms, local "
          f"{local_s * 1000:.2f} ms")


if __name__ == "__main__":
    main()
