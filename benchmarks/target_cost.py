"""What measuring in the browser and in Node.js adds per node, measured on a cached sweep.

Runs a recipe once with `eval.targets=[ort]` (computes and measures every node), then again on the same
cache with `[ort, browser]` and with `[ort, node]`: those reruns only measure on the new target (the models
and the ort numbers come from the cache), so their wall time over the cached rerun's is the target's cost.
Prints seconds per node for each target and the ratio to the ort measurement.

    python benchmarks/target_cost.py [--recipe int4] [--override KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(store: Path, recipe: str, targets: str, extra: list[str]) -> tuple[float, int]:
    """(wall seconds, nodes) of one invocation."""
    cmd = [sys.executable, "-m", "orchestrator", f"+recipe={recipe}", f"cache.dir={store / 'cache'}",
           "tracking=none", f"eval.targets={targets}", *extra]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    nodes = int(re.search(r"(\d+) unique nodes", out.stdout).group(1))
    return time.perf_counter() - start, nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="int4")
    parser.add_argument("--override", action="append", default=[])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        first, nodes = run(store, args.recipe, "[ort]", args.override)
        cached, _ = run(store, args.recipe, "[ort]", args.override)  # everything from the cache: the floor
        ort_fresh, _ = run(store, args.recipe, "[ort]", [*args.override, "eval.repeats=201"])  # re-measure ort
        ort_cost = (ort_fresh - cached) / nodes
        print(f"{args.recipe}: {nodes} nodes; first run {first:.1f}s, fully cached rerun {cached:.1f}s; "
              f"ort measurement {ort_cost:.2f}s per node")
        for target in ("browser", "node"):
            wall, _ = run(store, args.recipe, f"[ort,{target}]", args.override)
            per_node = (wall - cached) / nodes
            print(f"{target}: +{per_node:.2f}s per node ({per_node / ort_cost:.1f}x the ort measurement)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
