"""A budgeted search against the full grid of the same space: Pareto hypervolume and stage executions.

The space (digits): every order of prune, distill and quantize plus each step alone, x 3 prune ratios x 3
quantization modes x 2 distillation temperatures. The grid runs once; the Optuna search (`search.strategy=
optuna`, its default TPE sampler) then runs with 25% of the grid's leaves as its budget, once per seed, each
in a fresh cache and tracking store, so its stage executions are counted from nothing, like the grid's.

Every leaf's (quality up, latency down, size down) is divided by the baseline's, and the hypervolume of the
leaves' Pareto front is taken against one reference point (10% past the worst value of each objective over
every run), so grid and search are measured in the same box. Prints, per seed and averaged, the ratio
search/grid of the hypervolume and of the stage executions. Each run is the CLI in a subprocess; the leaves
are read back from its MLflow store.

    python benchmarks/search_vs_grid.py [--seeds 0 1 2] [--keep DIR]
    python benchmarks/search_vs_grid.py --quick    # a smoke run: prune/quantize only, short training
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUALITY, LATENCY, SIZE = "accuracy", "latency_p50_ms", "model_size_mb"
STEPS = ("prune", "distill", "quantize")
FULL = {"orderings": [list(p) for p in itertools.permutations(STEPS)] + [[s] for s in STEPS],
        "sweep": "{stages.prune.ratio: [0.3, 0.5, 0.7], stages.quantize.mode: [int8, fp16, int4], "
                 "stages.distill.temperature: [2.0, 4.0]}",
        "overrides": []}
QUICK = {"orderings": [["prune", "quantize"], ["quantize", "prune"], ["prune"], ["quantize"]],
         "sweep": "{stages.prune.ratio: [0.3, 0.6], stages.quantize.mode: [int8, fp16]}",
         "overrides": ["task.epochs=2", "task.width=32", "task.hidden=128", "eval.repeats=20", "eval.warmup=2"]}
OBJECTIVES = f"search.objectives=[{{quality: auto}}, {{{LATENCY}: minimize}}, {{{SIZE}: minimize}}]"


def cli(store: Path, space: dict, *extra: str) -> tuple[list[dict[str, float]], dict[str, float], int]:
    """Run the CLI on `space` into a fresh store; (leaf metrics, baseline metrics, stage executions)."""
    store.mkdir(parents=True, exist_ok=True)
    orderings = "[" + ",".join("[" + ",".join(c) + "]" for c in space["orderings"]) + "]"
    args = [sys.executable, "-m", "orchestrator", "task=digits", f"orderings={orderings}",
            f"++sweep={space['sweep']}", "tracking.log_models=false", f"cache.dir={store / 'cache'}",
            f"tracking.uri=sqlite:///{store / 'mlflow.db'}", f"tracking.artifact_root={store / 'art'}",
            *space["overrides"], *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"run failed ({out.returncode}): {' '.join(args)}\n{out.stderr[-3000:]}")
    found = re.search(r"(\d+) unique nodes: (\d+) stage executions", out.stdout)
    if not found:
        raise SystemExit(f"no summary line in the output:\n{out.stdout[-2000:]}")
    leaves, base = _read(store)
    return leaves, base, int(found[2])


def _read(store: Path) -> tuple[list[dict[str, float]], dict[str, float]]:
    """The leaf runs' and the baseline run's metrics of the store's one sweep."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name("adhoc")
    runs = client.search_runs([exp.experiment_id], max_results=10000)
    keep = (QUALITY, LATENCY, SIZE)
    leaves = [{k: r.data.metrics[k] for k in keep} for r in runs if r.data.tags.get("orchestrator.leaf") == "true"
              and all(k in r.data.metrics for k in keep)]
    (base,) = [{k: r.data.metrics[k] for k in keep} for r in runs
               if r.data.tags.get("orchestrator.stage") == "baseline"]
    return leaves, base


def normalised(leaves: list[dict[str, float]], base: dict[str, float]) -> list[tuple[float, float, float]]:
    """Each leaf as three values to minimise, relative to the baseline: -quality, latency, size."""
    return [(-m[QUALITY] / base[QUALITY], m[LATENCY] / base[LATENCY], m[SIZE] / base[SIZE]) for m in leaves]


def hypervolume(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """The volume dominated by `points` (minimisation) and bounded by `ref`, exactly, by slicing the last axis."""
    pts = sorted((p for p in points if all(a < r for a, r in zip(p, ref, strict=True))), key=lambda p: p[-1])
    if not pts:
        return 0.0
    if len(ref) == 1:
        return ref[0] - pts[0][0]
    total = 0.0
    for i, p in enumerate(pts):
        top = pts[i + 1][-1] if i + 1 < len(pts) else ref[-1]
        if top > p[-1]:
            total += (top - p[-1]) * hypervolume([q[:-1] for q in pts[: i + 1]], ref[:-1])
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller space and short training (a smoke run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--keep", type=Path, help="keep every run's store under this folder")
    args = parser.parse_args(argv)
    space = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        grid, grid_base, grid_exec = cli(root / "grid", space)
        budget = max(1, round(0.25 * len(grid)))
        print(f"grid: {len(grid)} leaves, {grid_exec} stage executions; search budget: {budget} trials", flush=True)
        searches = {}
        for seed in args.seeds:
            leaves, base, executed = cli(root / f"search-{seed}", space, "search.strategy=optuna",
                                         f"search.trials={budget}", f"search.seed={seed}", OBJECTIVES)
            searches[seed] = (normalised(leaves, base), executed)
            print(f"seed {seed}: {len(leaves)} leaves, {executed} stage executions", flush=True)
    grid_points = normalised(grid, grid_base)
    every = grid_points + [p for pts, _ in searches.values() for p in pts]
    ref = tuple(max(p[i] for p in every) + 0.1 * abs(max(p[i] for p in every)) + 1e-9 for i in range(3))
    grid_hv = hypervolume(grid_points, ref)
    print(f"grid hypervolume {grid_hv:.4g} (reference point {tuple(round(r, 3) for r in ref)})")
    print("seed | hypervolume search/grid | stage executions search/grid")
    hv_ratios, exec_ratios = [], []
    for seed, (points, executed) in searches.items():
        hv_ratios.append(hypervolume(points, ref) / grid_hv)
        exec_ratios.append(executed / grid_exec)
        print(f"{seed} | {hv_ratios[-1]:.3f} | {exec_ratios[-1]:.3f} ({executed}/{grid_exec})")
    print(f"mean | {statistics.mean(hv_ratios):.3f} | {statistics.mean(exec_ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
