"""Print the `tiny_tweets` sweep from MLflow: every leaf against the baseline of the same sweep, and the goal.

The goal (issue "past the int8 wall"): some leaf >= 12x smaller (`model_size_mb`), >= 6x faster
(`latency_p50_ms`, batch 1, the sweep's `eval.threads` and `eval.pad_to`, same as the baseline's) and within
1 accuracy point of the baseline. Ratios are computed here from the logged metrics, never typed. Run the
sweep first: `python -m orchestrator +recipe=tiny_tweets task=tweets`. Usage:

    python benchmarks/tiny_table.py [--tracking-uri sqlite:///mlruns/mlflow.db] [--experiment tiny_tweets]

Exits 0 when some leaf meets the goal, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_deploy_table import VARIANT, leaves  # noqa: E402
from ordering_table import table  # noqa: E402

COLUMNS = ["variant", "accuracy", "drop pts", "size MB", "x smaller", "p50 ms", "x faster", "goal"]
FORMATS = {"accuracy": "{:.4f}", "drop pts": "{:+.2f}", "size MB": "{:.2f}", "x smaller": "{:.1f}x",
           "p50 ms": "{:.2f}", "x faster": "{:.1f}x"}
GOAL = {"smaller": 12.0, "faster": 6.0, "drop": 1.0}


def rows(runs: list[Any]) -> list[dict[str, Any]]:
    """One row per leaf with its ratios to the baseline leaf of the same sweep, smallest first."""
    by_name = {run.data.tags.get(VARIANT, run.info.run_name): run.data.metrics for run in runs}
    base = by_name.get("baseline")
    if base is None:
        raise SystemExit("the sweep has no baseline leaf: the recipe's orderings must include []")
    out = []
    for name, m in by_name.items():
        row = {"variant": name, "accuracy": m.get("accuracy"), "size MB": m.get("model_size_mb"),
               "p50 ms": m.get("latency_p50_ms")}
        row["drop pts"] = 100 * (base["accuracy"] - m["accuracy"])
        row["x smaller"] = base["model_size_mb"] / m["model_size_mb"]
        row["x faster"] = base["latency_p50_ms"] / m["latency_p50_ms"]
        met = (row["x smaller"] >= GOAL["smaller"] and row["x faster"] >= GOAL["faster"]
               and row["drop pts"] <= GOAL["drop"])
        row["goal"] = "met" if met else ""
        out.append(row)
    return sorted(out, key=lambda r: -r["x smaller"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    parser.add_argument("--experiment", default="tiny_tweets")
    args = parser.parse_args(argv)
    data = rows(leaves(args.tracking_uri, args.experiment))
    print(table(data, COLUMNS, FORMATS))
    met = [r["variant"] for r in data if r["goal"]]
    print(f"\ngoal (>= {GOAL['smaller']:g}x smaller, >= {GOAL['faster']:g}x faster, <= {GOAL['drop']:g} point "
          f"drop): {'met by ' + ', '.join(met) if met else 'not met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
