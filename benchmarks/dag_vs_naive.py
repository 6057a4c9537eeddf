"""DAG with shared prefixes vs. the same variants run naively from scratch (one fresh pipeline per variant).

Prints wall time of each, their ratio and the number of stage executions of each. Both run in this
process with tracking off, so the ratio measures compute, not start-up.

    python benchmarks/dag_vs_naive.py +recipe=pkdq [overrides...]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import compose  # noqa: E402

from orchestrator.engine.cache import Cache  # noqa: E402
from orchestrator.engine.execute import execute  # noqa: E402
from orchestrator.engine.executors.base import Job  # noqa: E402
from orchestrator.engine.plan import Plan, plan  # noqa: E402
from orchestrator.measure.evaluate import EvalSettings  # noqa: E402
from orchestrator.stages import REGISTRY  # noqa: E402
from orchestrator.tasks import TASKS  # noqa: E402


def run(the_plan: Plan, cfg: dict, cache_dir: str) -> tuple[float, int]:
    """Execute a plan into a cache; returns (seconds, stage executions)."""
    cache = Cache(cache_dir)
    settings = EvalSettings.from_config(cfg["eval"])

    def job(node):
        root = the_plan.ancestors(node.key)[0]
        return Job(node, root.key, root.params, int(cfg["seed"]), str(cache.root), settings, cfg["stages"]["export"])

    start = time.perf_counter()
    results = execute(the_plan, job, lambda n: None, lambda n, r: None)
    failed = [r for r in results.values() if r.status == "failed"]
    if failed:
        raise SystemExit(failed[0].error)
    return time.perf_counter() - start, sum(r.executed for r in results.values())


def warm_up() -> None:
    """Import the heavy libraries first, so neither side pays their one-time start-up cost."""
    import onnxruntime.quantization  # noqa: F401
    import torch
    import torch_pruning  # noqa: F401

    torch.nn.functional.conv2d(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 3, 3))


def main(overrides: list[str]) -> None:
    warm_up()
    cfg = compose(*(overrides or ["+recipe=pkdq"]))
    dag = plan(cfg, REGISTRY, TASKS)
    with tempfile.TemporaryDirectory() as tmp:
        dag_s, dag_n = run(dag, cfg, f"{tmp}/dag")
        naive_s, naive_n = 0.0, 0
        for i, variant in enumerate(dag.variants):
            one = Plan({n.key: n for n in dag.ancestors(variant.leaf)}, [variant])
            secs, n = run(one, cfg, f"{tmp}/naive{i}")  # a fresh cache per variant: nothing shared
            naive_s, naive_n = naive_s + secs, naive_n + n
    print(f"variants: {len(dag.variants)}  unique DAG nodes: {len(dag.nodes)}")
    print(f"DAG:   {dag_s:8.1f} s  {dag_n:4d} stage executions")
    print(f"naive: {naive_s:8.1f} s  {naive_n:4d} stage executions")
    print(f"wall time ratio DAG/naive: {dag_s / naive_s:.2f}   executions ratio: {dag_n / naive_n:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
