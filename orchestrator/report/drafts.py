"""The speculative-decoding view of a report: which compressed model is the best draft for the target?

Rows measured with `eval.speculative` (see tasks/lm_spec) are ranked by `spec_speedup`, the measured
speed-up of greedy decoding with the row's model drafting for the target over the target alone, with the
acceptance rate that explains it. The same lines go under the terminal table and into the Markdown report.
"""

from __future__ import annotations

from typing import Any

from orchestrator.report import tables

COLUMNS = [("spec_speedup", "speed-up", "{:.2f}x"), ("spec_acceptance_rate", "accepted", "{:.3f}"),
           ("spec_tokens_per_round", "tok/round", "{:.2f}"), ("spec_tokens_per_s", "tok/s", "{:.4g}"),
           ("spec_target_tokens_per_s", "target tok/s", "{:.4g}"), ("model_size_mb", "draft MB", "{:.4g}"),
           ("spec_identical", "same text", "{}")]
TITLE = "Drafts for speculative decoding (greedy, batch 1; ranked by measured speed-up over the target alone):"


def ranked(rows: list[Any]) -> list[Any]:
    """The rows measured as drafts, fastest first."""
    drafts = [r for r in rows if "spec_speedup" in r.metrics]
    return sorted(drafts, key=lambda r: (-r.metrics["spec_speedup"], r.label))


def _cells(row: Any) -> list[str]:
    out = [row.label]
    for key, _, fmt in COLUMNS:
        value = row.metrics.get(key)
        if key == "spec_identical":
            out.append("-" if value is None else "yes" if value == 1.0 else "NO")
        else:
            out.append("-" if value is None else fmt.format(value))
    return out


def text(rows: list[Any]) -> list[str]:
    """The view as fixed-width lines (nothing when no row was measured as a draft)."""
    drafts = ranked(rows)
    head = ["draft", *(t for _, t, _ in COLUMNS)]
    return ["", TITLE, *tables.fixed_width(head, [_cells(r) for r in drafts])] if drafts else []


def markdown(rows: list[Any]) -> list[str]:
    """The view as a Markdown table (nothing when no row was measured as a draft)."""
    drafts = ranked(rows)
    head = ["draft", *(t for _, t, _ in COLUMNS)]
    return ["", TITLE, "", *tables.markdown(head, [_cells(r) for r in drafts])] if drafts else []
