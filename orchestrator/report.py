"""The end-of-sweep report: one row per variant (plus the baseline), as a terminal/Markdown table."""

from __future__ import annotations

from typing import Any

from orchestrator.plan import BASELINE, Plan

COLUMNS = [("accuracy", "accuracy", "{:.4f}"), ("model_size_mb", "size MB", "{:.3f}"),
           ("params", "params", "{:.0f}"), ("latency_p50_ms", "p50 ms", "{:.3f}"),
           ("latency_p95_ms", "p95 ms", "{:.3f}")]


def variant_rows(plan: Plan, results: dict[str, Any]) -> list[dict[str, Any]]:
    """Baseline first, then each variant in plan order, with its leaf's status and metrics."""
    rows, seen = [], set()
    for root in plan.children(None):
        if root.key not in plan.leaves():
            rows.append(_row(BASELINE, root.key, results))
            seen.add(root.key)
    for variant in plan.variants:
        if variant.leaf not in seen:
            rows.append(_row(variant.label, variant.leaf, results))
            seen.add(variant.leaf)
    return rows


def _row(label: str, key: str, results: dict[str, Any]) -> dict[str, Any]:
    res = results.get(key)
    return {"variant": label, "key": key, "status": res.status if res else "missing",
            **(res.metrics if res else {})}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows (metrics missing for failed/skipped variants show as '-')."""
    head = ["variant", "status", *(title for _, title, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["variant"], row["status"]]
        cells += [fmt.format(row[key]) if key in row else "-" for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
