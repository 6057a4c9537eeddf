"""Print the LLM ordering study from MLflow in the paper's shape: model, order, size, perplexity, compression.

Reads the latest sweep (parent run) of the `ordering_study_llm` experiment and its leaf runs, one row per
order, and says whether the orders that quantize before pruning are catastrophic here, next to the numbers
of the P-KD-Q paper (arXiv 2511.19495, Qwen2.5-3B: P-KD-Q perplexity 5.05; orders quantizing before pruning
24-53). Run the study first, e.g. `python -m orchestrator +recipe=ordering_study_llm task=tinylm`. Usage:

    python benchmarks/ordering_table_llm.py [--tracking-uri sqlite:///mlruns/mlflow.db]
        [--experiment ordering_study_llm]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ordering_table import PIPELINE, latest_sweep  # noqa: E402
from ordering_table import table as markdown_table  # noqa: E402

COLUMNS = ["model", "order", "size MB", "perplexity", "x ppl", "compression", "tok/s"]
PAPER = {"best": 5.05, "q_first": (24.0, 53.0)}
CATASTROPHIC = 2.0  # a perplexity this many times the best order's is called catastrophic (paper: ~5-10x)


def quantizes_before_pruning(order: str) -> bool:
    """True for chains in which quantize comes before prune."""
    steps = order.split(">")
    return "quantize" in steps and "prune" in steps and steps.index("quantize") < steps.index("prune")


def rows(uri: str, experiment: str) -> list[dict[str, Any]]:
    """One row per leaf of the latest sweep (baseline first, then single stages, then orders)."""
    parent, leaves = latest_sweep(uri, experiment)
    model = parent.data.params.get("task.name") or parent.data.tags.get("orchestrator.task", "?")
    out = []
    for run in leaves:
        m = run.data.metrics
        base_size, base_ppl = m.get("baseline/model_size_mb", m.get("model_size_mb")), m.get("baseline/perplexity")
        out.append({"model": model, "order": run.data.tags.get(PIPELINE, "?"), "size MB": m.get("model_size_mb"),
                    "perplexity": m.get("perplexity"),
                    "x ppl": m["perplexity"] / base_ppl if base_ppl and "perplexity" in m else 1.0,
                    "compression": base_size / m["model_size_mb"] if m.get("model_size_mb") else None,
                    "tok/s": m.get("decode_tokens_per_s")})
    return sorted(out, key=lambda r: (r["order"] != "baseline", r["order"].count(">"), r["order"]))


def table(data: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows."""
    return markdown_table(data, COLUMNS, {"size MB": "{:.3f}", "perplexity": "{:.2f}", "x ppl": "{:.3f}",
                                          "compression": "{:.2f}x", "tok/s": "{:.0f}"})


def verdict(data: list[dict[str, Any]]) -> str:
    """One line: are the quantize-before-prune orders catastrophic here, as in the paper?"""
    full = [r for r in data if r["order"].count(">") == 2 and r["perplexity"] is not None]
    q_first = [r for r in full if quantizes_before_pruning(r["order"])]
    others = [r for r in full if not quantizes_before_pruning(r["order"])]
    if not q_first or not others:
        return "Not enough three-stage orders measured to compare."
    best = min(others, key=lambda r: r["perplexity"])
    worst = max(r["perplexity"] for r in q_first) / best["perplexity"]
    lo, hi = min(r["perplexity"] for r in q_first), max(r["perplexity"] for r in q_first)
    word = "catastrophic" if worst >= CATASTROPHIC else "not catastrophic"
    paper = f"paper: P-KD-Q {PAPER['best']}, quantize-before-prune {PAPER['q_first'][0]:g}-{PAPER['q_first'][1]:g}"
    return (f"Quantize-before-prune orders: perplexity {lo:.2f}-{hi:.2f}, up to {worst:.2f}x the best other order "
            f"({best['order']}: {best['perplexity']:.2f}): {word} here (threshold {CATASTROPHIC:g}x; {paper}, "
            f"up to {PAPER['q_first'][1] / PAPER['best']:.1f}x).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    parser.add_argument("--experiment", default="ordering_study_llm")
    args = parser.parse_args(argv)
    data = rows(args.tracking_uri, args.experiment)
    print(table(data))
    print(f"\n{verdict(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
