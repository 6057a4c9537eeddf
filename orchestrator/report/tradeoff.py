"""The trade-off report: what to ship, and why.

At the end of every sweep, and later from MLflow alone (`python -m orchestrator.report <parent run id |
experiment name>`), the same code turns the variants' numbers into: a compact terminal table and a full
Markdown table, both sorted by the quality/latency Pareto front; two PNG plots (see plots); and the
recommended variant under the `report.max_*` constraints, with the reason, or the binding constraint.
What quality is, and how a task's own columns show, comes from the task (orchestrator.tasks.quality).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.engine.plan import BASELINE, Plan
from orchestrator.measure import targets
from orchestrator.report import drafts, tables
from orchestrator.report.pareto import LOSS, Constraints, Recommendation, Row, layers, recommend
from orchestrator.tasks.quality import Columns, Quality

# (metric key or a derived name, column title, format); derived: front, quality and loss (the task's, see
# Quality: their titles and formats come from it), speedup, smaller
TERMINAL = [("front", "front", "{}"), ("quality", "", ""), ("loss", "", ""),
            ("teacher_agreement", "agree", "{:.3f}"), ("latency_p50_ms", "p50 ms", "{:.4g}"),
            ("latency_cv", "cv", "{:.2f}"), ("speedup", "x faster", "{:.2f}"), ("model_size_mb", "MB", "{:.4g}"),
            ("model_size_gzip_mb", "gz MB", "{:.4g}"), ("peak_rss_mb", "RSS MB", "{:.1f}")]
MARKDOWN = [("front", "front", "{}"), ("quality", "", ""), ("loss", "", ""),
            ("f1", "macro f1", "{:.4f}"), ("teacher_agreement", "agreement", "{:.4f}"),
            ("latency_p50_ms", "p50 ms", "{:.4g}"), ("latency_p90_ms", "p90 ms", "{:.4g}"),
            ("latency_p95_ms", "p95 ms", "{:.4g}"), ("latency_p99_ms", "p99 ms", "{:.4g}"),
            ("latency_mean_ms", "mean ms", "{:.4g}"), ("latency_cv", "cv", "{:.3f}"),
            ("speedup", "x faster (p50)", "{:.2f}"), ("throughput_per_s", "samples/s", "{:.4g}"),
            ("load_ms", "load ms", "{:.4g}"), ("first_inference_ms", "1st call ms", "{:.4g}"),
            ("model_size_mb", "size MB", "{:.4g}"), ("model_size_gzip_mb", "gzip MB", "{:.4g}"),
            ("smaller", "x smaller", "{:.2f}"), ("params", "params", "{:.0f}"), ("sparsity", "sparsity", "{:.3f}"),
            ("peak_rss_mb", "peak RSS MB", "{:.1f}"), ("peak_rss_delta_mb", "RSS delta MB", "{:.1f}")]
PARAMS = (LOSS, "max_latency_ms", "max_size_mb")  # + the targets' limits (limit_keys)
DERIVED = ("front", "loss", "speedup", "smaller")


def limit_keys() -> tuple[str, ...]:
    """Every report.max_* key: PARAMS, then the constraints the registered targets add."""
    return (*PARAMS, *targets.limits())


@dataclass
class Report:
    """Rows sorted by the latency front, front membership per row key, and the recommendation."""

    rows: list[Row]
    fronts: dict[str, str]  # key -> "L", "S", "L+S" or ""
    rec: Recommendation
    limits: Constraints
    notes: list[str] = field(default_factory=list)  # what the task says about its numbers (e.g. a model's origin)
    columns: Columns = field(default_factory=Columns)  # the task's own columns and legend

    @property
    def quality(self) -> Quality:
        """The task's quality contract the report ranks by."""
        return self.limits.quality


def baseline_label(key: str, roots: int) -> str:
    """`baseline`, with its short key when a sweep has several baselines (e.g. swept seeds)."""
    return BASELINE if roots == 1 else f"{BASELINE} ({key[:8]})"


def rows_from_results(plan: Plan, results: dict[str, Any]) -> list[Row]:
    """One row per baseline and per variant leaf, from this sweep's NodeResults."""
    def metrics(key: str) -> dict[str, float]:
        return dict(results[key].metrics) if key in results else {}

    roots = plan.children(None)
    rows = [Row(baseline_label(r.key, len(roots)), r.key, results[r.key].status if r.key in results else "missing",
                metrics(r.key), metrics(r.key), True) for r in roots]
    seen = {r.key for r in roots}
    for v in plan.variants:
        if v.leaf not in seen:
            seen.add(v.leaf)
            status = results[v.leaf].status if v.leaf in results else "missing"
            rows.append(Row(v.label, v.leaf, status, metrics(v.leaf), metrics(plan.ancestors(v.leaf)[0].key)))
    return rows


def build(rows: list[Row], limits: Constraints, columns: Columns | None = None) -> Report:
    """Fronts, the recommendation, and the rows sorted: latency front layers, then gated, then unmeasured.

    Everything is computed on `report.target`'s numbers and the task's quality (limits.axes).
    """
    axes = limits.axes
    for r in rows:
        r.axes = axes
    lat, size = layers(rows, axes.latency), layers(rows, axes.size)
    fronts = {r.key: "+".join(n for n, lay in (("L", lat), ("S", size)) if lay.get(r.key) == 1) for r in rows}

    def order(r: Row) -> tuple:
        if r.key in lat:
            return 0, lat[r.key], r.metrics[axes.latency], r.label
        return (1 if r.status == "gated" else 2), 0, r.metrics.get(axes.latency, float("inf")), r.label

    return Report(sorted(rows, key=order), fronts, recommend(rows, limits), limits, columns=columns or Columns())


def _cell(report: Report, row: Row, key: str, fmt: str) -> str:
    derived = {"front": report.fronts.get(row.key, ""), "loss": None if row.is_baseline else row.loss,
               "speedup": row.ratio(row.axes.latency), "smaller": row.ratio(row.axes.size)}
    if key == "loss" and row.is_baseline:
        derived["loss"] = report.quality.no_loss
    value = derived[key] if key in derived else row.metrics.get(key)
    return "-" if value is None or value == "" else fmt.format(value)


def _label(report: Report, row: Row) -> str:
    return ("* " if report.rec.row is not None and report.rec.row.key == row.key else "") + row.label


def columns(report: Report, base: list[tuple[str, str, str]], markdown: bool = False) -> list[tuple[str, str, str]]:
    """`base` with the task's quality and its own columns (each once, only those some row has), plus the
    columns of every target some row was measured on (its Markdown ones for `markdown`)."""
    q, mine = report.quality, report.columns
    named = {"quality": (q.metric, q.column, q.fmt), "loss": ("loss", q.loss_title, q.loss_fmt)}
    swapped = [mine.swap.get(k, named.get(k, (k, t, f))) for k, t, f in base] + list(mine.extra)
    base = [c for i, c in enumerate(swapped) if c not in swapped[:i]
            and (c[0] in DERIVED or any(c[0] in r.metrics for r in report.rows))]
    own = [(t.markdown_columns if markdown and t.markdown_columns is not None else t.columns)
           for t in targets.all_targets()]
    extra = [c for cols in own for c in cols if any(c[0] in r.metrics for r in report.rows)]
    return [*base, *extra]


def collapses(report: Report) -> list[str]:
    """One line naming the variants whose quality collapsed (the task's Quality.collapse), if any."""
    q = report.quality
    bad = [f"{r.label} ({q.short_loss(r.loss)})" for r in report.rows if not r.is_baseline and r.collapsed]
    said = q.describe_loss(q.collapse)
    return [f"{q.metric.capitalize()} collapse (>= {said}): " + ", ".join(bad)] if bad else []


def task_notes(task_cls: type, rows: list[Row]) -> list[str]:
    """The task's notes under the report, and its warnings about implausible baselines (printed loudly)."""
    warnings = [w for r in rows if r.is_baseline for w in task_cls.baseline_warnings(r.metrics)]
    return [*warnings, *task_cls.report_notes]


def terminal_table(report: Report) -> str:
    """A compact fixed-width table for the terminal."""
    cols = columns(report, TERMINAL)
    head = ["variant", "status", *(t for _, t, _ in cols)]
    body = [[_label(report, r), r.status, *(_cell(report, r, k, f) for k, _, f in cols)] for r in report.rows]
    return "\n".join(tables.fixed_width(head, body, left=3))


def render(report: Report) -> str:
    """What is printed: the compact table, its legend and the recommendation."""
    target = report.limits.target
    note = "" if target == "ort" else f"; fronts, x faster and the recommendation use the {target}'s numbers"
    extra = "".join(f"\n{line}" for line in [*collapses(report), *report.notes, *drafts.text(report.rows)])
    return f"{terminal_table(report)}\n{_legend(report)}{note}{extra}\n\n{report.rec.text}"


def _legend(report: Report) -> str:
    q = report.quality
    return (f"front: L = on the {q.metric}/latency front, S = on the {q.metric}/size front; * = recommended; "
            f"{q.legend()}; x faster = baseline p50 / p50" + (f"; {report.columns.legend}" if report.columns.legend
                                                              else ""))


def markdown(report: Report, title: str, env: dict[str, str]) -> str:
    """The full report: every measured metric per row, the recommendation, the measuring environment."""
    cols = columns(report, MARKDOWN, markdown=True)
    head = ["variant", "status", *(t for _, t, _ in cols)]
    body = [[_label(report, r), r.status, *(_cell(report, r, k, f) for k, _, f in cols)] for r in report.rows]
    lines = [f"# {title}: trade-off report", "", *tables.markdown(head, body)]
    envs = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(env.items()))
    return "\n".join([*lines, "", _legend(report) + ".", *collapses(report), *report.notes,
                      *drafts.markdown(report.rows), "",
                      *report.rec.lines, "", f"Measured with: {envs}", ""])


SUMMARY = [("quality", "", ""), ("loss", "", ""), ("latency_p50_ms", "p50 ms", "{:.4g}"),
           ("speedup", "x faster", "{:.2f}"), ("model_size_mb", "MB", "{:.4g}"), ("smaller", "x smaller", "{:.2f}")]


def summary_markdown(report: Report, title: str) -> str:
    """The parent run's description: the recommendation, why, the constraints and a compact table."""
    from orchestrator.report.pareto import describe

    cols = columns(report, SUMMARY)
    head = ["variant", "front", *(t for _, t, _ in cols)]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report.rows:
        cells = [_label(report, r).replace("|", "\\|"), report.fronts.get(r.key, "") or "-",
                 *(_cell(report, r, k, f) for k, _, f in cols)]
        table.append("| " + " | ".join(cells) + " |")
    chosen = report.rec.row
    head_line = f"## {title}: ship **{chosen.label}**" if chosen else f"## {title}: no variant qualifies"
    target = report.limits.target
    reasons = report.rec.lines[1:] if chosen else report.rec.lines
    return "\n".join([head_line, "", *reasons, "",
                      f"Constraints: {describe(report.limits)}. Ranked on the {target} target's numbers.", "",
                      *table, "", f"* = recommended; L / S = on the {report.quality.metric}/latency or "
                      f"{report.quality.metric}/size Pareto front. "
                      "Full table: `report.md`; plots: `pareto_latency.png`, `pareto_size.png`. "
                      "Filter the runs table to variants with `tags.orchestrator.leaf = 'true'`."])


def node_tags(report: Report) -> dict[str, dict[str, str]]:
    """Per candidate row key: `orchestrator.pareto` (on either front, plus per front) and `.recommended`."""
    from orchestrator.tracking.tracker import PARETO, RECOMMENDED

    chosen = report.rec.row.key if report.rec.row else None
    return {r.key: {PARETO: str(bool(report.fronts.get(r.key))).lower(),
                    f"{PARETO}.latency": str("L" in report.fronts.get(r.key, "")).lower(),
                    f"{PARETO}.size": str("S" in report.fronts.get(r.key, "")).lower(),
                    RECOMMENDED: str(r.key == chosen).lower()} for r in report.rows if r.candidate}


def publish(tracker: Any, report: Report, title: str, env: dict[str, str]) -> None:
    """Log the report on the sweep's parent run (table, plots, constraints) and tag the node runs."""
    from orchestrator.report.plots import write_plots

    chosen = report.rec.row
    with tempfile.TemporaryDirectory() as tmp:
        images = write_plots(report.rows, chosen.key if chosen else None, report.limits, Path(tmp), title)
        tracker.log_report({**{f"report.{k}": str(report.limits.get(k)) for k in limit_keys()},
                            "report.target": report.limits.target},
                           {"report.md": markdown(report, title, env), "report.txt": render(report) + "\n"},
                           images, node_tags(report),
                           {"orchestrator.recommended_variant": chosen.label if chosen else "none",
                            **report.quality.as_tags(),
                            "mlflow.note.content": summary_markdown(report, title)})
