"""Run every recipe (or the ones named) at full size on the default task, timing each one.

The test suite runs each recipe with reduced settings; this is the full-size run. Each recipe is a
separate `python -m orchestrator +recipe=NAME` against one cache and one MLflow store, so reruns hit
the cache. Afterwards, print the ordering-study table from MLflow. Usage:

    python benchmarks/run_recipes.py [NAME ...] [--cache-dir DIR] [--tracking-uri URI] [--override KEY=VALUE]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run(recipe: str, args: argparse.Namespace) -> tuple[int, float, str]:
    """(exit code, wall seconds, the summary line) of one full recipe run."""
    cmd = [sys.executable, "-m", "orchestrator", f"+recipe={recipe}", f"cache.dir={args.cache_dir}",
           f"tracking.uri={args.tracking_uri}", f"tracking.artifact_root={args.artifact_root}", *args.override]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    summary = next((line for line in proc.stdout.splitlines() if "unique nodes" in line), proc.stderr[-500:])
    return proc.returncode, wall, summary


def main(argv: list[str] | None = None) -> int:
    from orchestrator.config.schema import discover_recipes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help="default: every recipe")
    parser.add_argument("--cache-dir", default=".cache/orchestrator")
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    parser.add_argument("--artifact-root", default="mlruns/artifacts")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override, repeatable")
    args = parser.parse_args(argv)
    failed = 0
    for recipe in args.recipes or sorted(discover_recipes()):
        code, wall, summary = run(recipe, args)
        failed += code != 0
        print(f"{recipe:<16} exit {code}  {wall:7.1f}s  {summary}", flush=True)
    if not args.recipes or "ordering_study" in args.recipes:
        from ordering_table import rows, table  # this folder is on sys.path when run as a script

        print("\n" + table(rows(args.tracking_uri, "ordering_study")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
