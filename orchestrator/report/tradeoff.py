"""The trade-off report: what to ship, and why.

At the end of every sweep, and later from MLflow alone (`python -m orchestrator.report <parent run id |
experiment name>`), the same code turns the variants' numbers into: a compact terminal table and a full
Markdown table, both sorted by the accuracy/latency Pareto front; two PNG plots (see plots); and the
recommended variant under the `report.max_*` constraints, with the reason, or the binding constraint.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.engine.plan import BASELINE, Plan
from orchestrator.measure import targets
from orchestrator.report import drafts, tables
from orchestrator.report.pareto import ACCURACY, PERPLEXITY, Constraints, Recommendation, Row, layers, recommend

# (metric key or a derived name, column title, format); derived: front, drop, speedup, smaller
TERMINAL = [("front", "front", "{}"), ("accuracy", "acc", "{:.4f}"), ("drop", "drop", "{:+.4f}"),
            ("teacher_agreement", "agree", "{:.3f}"), ("latency_p50_ms", "p50 ms", "{:.4g}"),
            ("latency_cv", "cv", "{:.2f}"), ("speedup", "x faster", "{:.2f}"), ("model_size_mb", "MB", "{:.4g}"),
            ("model_size_gzip_mb", "gz MB", "{:.4g}"), ("peak_rss_mb", "RSS MB", "{:.1f}")]
MARKDOWN = [("front", "front", "{}"), ("accuracy", "accuracy", "{:.4f}"), ("drop", "acc. drop", "{:+.4f}"),
            ("f1", "macro f1", "{:.4f}"), ("teacher_agreement", "agreement", "{:.4f}"),
            ("latency_p50_ms", "p50 ms", "{:.4g}"), ("latency_p90_ms", "p90 ms", "{:.4g}"),
            ("latency_p95_ms", "p95 ms", "{:.4g}"), ("latency_p99_ms", "p99 ms", "{:.4g}"),
            ("latency_mean_ms", "mean ms", "{:.4g}"), ("latency_cv", "cv", "{:.3f}"),
            ("speedup", "x faster (p50)", "{:.2f}"), ("throughput_per_s", "samples/s", "{:.4g}"),
            ("load_ms", "load ms", "{:.4g}"), ("first_inference_ms", "1st call ms", "{:.4g}"),
            ("model_size_mb", "size MB", "{:.4g}"), ("model_size_gzip_mb", "gzip MB", "{:.4g}"),
            ("smaller", "x smaller", "{:.2f}"), ("params", "params", "{:.0f}"), ("sparsity", "sparsity", "{:.3f}"),
            ("peak_rss_mb", "peak RSS MB", "{:.1f}"), ("peak_rss_delta_mb", "RSS delta MB", "{:.1f}")]
LEGEND = ("front: L = on the accuracy/latency front, S = on the accuracy/size front; * = recommended; "
          "drop = baseline accuracy minus the variant's; x faster = baseline p50 / p50")
PARAMS = ("max_accuracy_drop", "max_perplexity_ratio", "max_latency_ms", "max_size_mb")  # + the targets' limits
# language models: perplexity replaces accuracy, its ratio the drop, bits per byte the f1; decoding columns join
LM_SWAP = {"accuracy": ("perplexity", "ppl", "{:.4g}"), "drop": ("ppl_ratio", "x ppl", "{:.3f}"),
           "f1": ("bits_per_byte", "bits/byte", "{:.4f}"), "latency_p50_ms": ("latency_p50_ms", "ms/token", "{:.4g}"),
           "latency_cv": ("decode_latency_p90_ms", "p90 ms/token", "{:.4g}")}
LM_COLUMNS = [("prefill_ms", "prefill ms", "{:.4g}"), ("decode_tokens_per_s", "tok/s", "{:.4g}"),
              ("kv_cache_mb_per_1k_tokens", "KV MB/1k tok", "{:.4g}"), ("kv_agreement", "KV agree", "{:.3f}")]
COLLAPSE = 1.5  # a variant this many times the baseline's perplexity is called out under the table


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


def rows_from_runs(children: list[dict[str, Any]]) -> list[Row]:
    """The same rows rebuilt from a sweep's node runs in MLflow (see tracking.fetch_sweep)."""
    from orchestrator.tracking.tracker import LEAF, NODE_KEY, STATUS, VARIANT

    roots = [c for c in children if c["tags"].get("orchestrator.stage") == BASELINE]
    rows = []
    for c in roots:
        own = {k: v for k, v in c["metrics"].items() if "/" not in k}
        rows.append(Row(baseline_label(c["tags"][NODE_KEY], len(roots)), c["tags"][NODE_KEY], c["tags"][STATUS],
                        own, own, True))
    for c in children:
        if c["tags"].get(LEAF) == "true" and c["tags"].get("orchestrator.stage") != BASELINE:
            own = {k: v for k, v in c["metrics"].items() if "/" not in k}
            base = {k.split("/", 1)[1]: v for k, v in c["metrics"].items() if k.startswith(BASELINE + "/")}
            rows.append(Row(c["tags"].get(VARIANT, c["name"]), c["tags"][NODE_KEY], c["tags"][STATUS], own, base))
    return rows


def build(rows: list[Row], limits: Constraints) -> Report:
    """Fronts, the recommendation, and the rows sorted: latency front layers, then gated, then unmeasured.

    Everything is computed on `report.target`'s numbers (limits.axes).
    """
    if any(PERPLEXITY in r.metrics for r in rows) and not any(ACCURACY in r.metrics for r in rows):
        limits.quality = PERPLEXITY
    axes = limits.axes
    for r in rows:
        r.axes = axes
    lat, size = layers(rows, axes.latency), layers(rows, axes.size)
    fronts = {r.key: "+".join(n for n, lay in (("L", lat), ("S", size)) if lay.get(r.key) == 1) for r in rows}

    def order(r: Row) -> tuple:
        if r.key in lat:
            return 0, lat[r.key], r.metrics[axes.latency], r.label
        return (1 if r.status == "gated" else 2), 0, r.metrics.get(axes.latency, float("inf")), r.label

    return Report(sorted(rows, key=order), fronts, recommend(rows, limits), limits)


def _cell(report: Report, row: Row, key: str, fmt: str) -> str:
    derived = {"front": report.fronts.get(row.key, ""), "drop": row.drop, "ppl_ratio": row.ppl_ratio,
               "speedup": row.ratio(row.axes.latency), "smaller": row.ratio(row.axes.size)}
    value = derived[key] if key in derived else row.metrics.get(key)
    return "-" if value is None or value == "" else fmt.format(value)


def _label(report: Report, row: Row) -> str:
    return ("* " if report.rec.row is not None and report.rec.row.key == row.key else "") + row.label


def columns(report: Report, base: list[tuple[str, str, str]], markdown: bool = False) -> list[tuple[str, str, str]]:
    """`base` plus the columns of every target some row was measured on (its Markdown ones for `markdown`)."""
    own = [(t.markdown_columns if markdown and t.markdown_columns is not None else t.columns)
           for t in targets.all_targets()]
    extra = [c for cols in own for c in cols if any(c[0] in r.metrics for r in report.rows)]
    if report.limits.quality == PERPLEXITY:  # LM names, each once, only those some row has
        swapped = [LM_SWAP.get(k, (k, t, f)) for k, t, f in base] + LM_COLUMNS
        derived = ("front", "ppl_ratio", "speedup", "smaller")
        base = [c for i, c in enumerate(swapped) if c not in swapped[:i]
                and (c[0] in derived or any(c[0] in r.metrics for r in report.rows))]
    return [*base, *extra]


def collapses(report: Report) -> list[str]:
    """One line naming the LM variants whose perplexity blew up (>= COLLAPSE x the baseline's), if any."""
    bad = [f"{r.label} ({r.ppl_ratio:.2f}x)" for r in report.rows if (r.ppl_ratio or 0) >= COLLAPSE]
    return [f"Perplexity collapse (>= {COLLAPSE:g}x the baseline's): " + ", ".join(bad)] if bad else []


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
    if report.limits.quality != PERPLEXITY:
        return LEGEND
    return (LEGEND.replace("accuracy/", "perplexity/").replace("drop = baseline accuracy minus the variant's",
                                                                "x ppl = perplexity / the baseline's")
            + "; ms/token = one greedy decoding step at batch 1 with the KV cache")


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


SUMMARY = [("accuracy", "accuracy", "{:.4f}"), ("drop", "drop", "{:+.4f}"), ("latency_p50_ms", "p50 ms", "{:.4g}"),
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
                      *table, "", "* = recommended; L / S = on the accuracy/latency or accuracy/size Pareto front. "
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
                            "mlflow.note.content": summary_markdown(report, title)})


def _limits(params: dict[str, str], args: argparse.Namespace) -> Constraints:
    """Constraints logged with the sweep, each overridable on the command line."""
    values = {k: (None if params.get(f"report.{k}") in (None, "", "None") else float(params[f"report.{k}"]))
              for k in limit_keys()}
    values.update({k: getattr(args, k) for k in limit_keys() if getattr(args, k) is not None})
    values["target"] = args.target or params.get("report.target") or "ort"
    return Constraints.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    """`python -m orchestrator.report REF`: print the report of a past sweep, write its plots and Markdown."""
    from orchestrator.config.plugins import install
    from orchestrator.config.schema import TrackingConfig
    from orchestrator.report.plots import write_plots
    from orchestrator.tracking.tracker import fetch_sweep

    install()  # the user's own targets: their columns, axes and limits
    ap = argparse.ArgumentParser(prog="python -m orchestrator.report", description=__doc__.splitlines()[0])
    ap.add_argument("ref", help="a sweep's parent run id, or an experiment name (its latest sweep)")
    ap.add_argument("--tracking-uri", default=TrackingConfig().uri, help="MLflow store (default: %(default)s)")
    ap.add_argument("--out", help="folder for report.md and the PNGs (default: .cache/orchestrator/reports/RUN)")
    for k in limit_keys():
        ap.add_argument("--" + k.replace("_", "-"), dest=k, type=float, help=f"override report.{k}")
    ap.add_argument("--target", choices=targets.selectable(), help="override report.target")
    args = ap.parse_args(argv)
    try:
        sweep = fetch_sweep(args.tracking_uri, args.ref)
    except LookupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = build(rows_from_runs(sweep["children"]), _limits(sweep["params"], args))
    title = sweep["tags"].get("orchestrator.recipe", sweep["experiment"])
    out = Path(args.out or Path(".cache/orchestrator/reports") / sweep["run_id"])
    env = {k: v for k, v in sweep["tags"].items() if k.startswith("orchestrator.env.")}
    images = write_plots(report.rows, report.rec.row.key if report.rec.row else None, report.limits, out, title)
    (out / "report.md").write_text(markdown(report, title, env))
    print(render(report))
    print(f"\nSweep {sweep['run_id']} (experiment {sweep['experiment']}); wrote {out / 'report.md'}"
          + "".join(f", {p.name}" for p in images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
