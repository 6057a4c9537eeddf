"""The trade-off plots: the task's quality against latency and against size, the front highlighted, the
baseline marked.

matplotlib with the Agg backend (files only, no display needed). Every measured variant is a numbered
point, and the key beside the axes names each number's variant (long pipeline labels placed next to
close points would overlap); numbers follow the report's row order. The Pareto front is a red step line
through its (red) members; the baseline is a black star; the recommended variant is ringed in green;
gated variants are grey crosses; the constraints are dashed orange lines.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.report.pareto import MEASURED, SIZE, Constraints, Row, front


def plots_for(limits: Constraints) -> dict[str, tuple[str, str, str | None]]:
    """file -> (metric, axis label, constraint or None) for report.target, labelled as that target declares."""
    axes, target = limits.axes, limits.axes.measured_on
    on_size = [lim.key for lim in target.limits if lim.metric == axes.size]  # a target's own limit on its axis
    size_limit = on_size[0] if on_size else "max_size_mb" if axes.size == SIZE else None
    return {"pareto_latency.png": (axes.latency, f"latency p50, batch 1 (ms), {target.label}", "max_latency_ms"),
            "pareto_size.png": (axes.size, target.size_label, size_limit)}


def write_plots(rows: list[Row], recommended: str | None, limits: Constraints, out_dir: Path,
                title: str) -> list[Path]:
    """Write both PNGs into `out_dir`; returns their paths (none when no row has the metrics)."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (cost, xlabel, limit) in plots_for(limits).items():
        pts = [r for r in rows if r.status in (*MEASURED, "gated") and limits.quality.metric in r.metrics
               and cost in r.metrics]
        if pts:
            _plot(pts, cost, xlabel, (limit or "", limits.get(limit) if limit else None), recommended, limits,
                  out_dir / name, title)
            paths.append(out_dir / name)
    return paths


def _plot(rows: list[Row], cost: str, xlabel: str, limit: tuple[str, float | None], recommended: str | None,
          limits: Constraints, path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 6), dpi=110)
    metric = limits.quality.metric
    members = front(rows, cost)
    on_front = {r.key for r in members}
    if members:
        ax.step([r.metrics[cost] for r in members], [r.metrics[metric] for r in members], where="post",
                color="tab:red", lw=1.5, alpha=0.7, label="Pareto front")
    for number, row in enumerate(rows, 1):
        x, y = row.metrics[cost], row.metrics[metric]
        style = _style(row, row.key in on_front)
        ax.scatter([x], [y], zorder=3, label=f"{number}  {row.label}{_note(row, row.key in on_front, recommended)}",
                   **style)
        if row.key == recommended:
            ax.scatter([x], [y], s=420, facecolors="none", edgecolors="tab:green", linewidths=2.5, zorder=4)
        ax.annotate(str(number), (x, y), textcoords="offset points", xytext=(7, 5), fontsize=9,
                    fontweight="bold", color=style["edgecolors"])
    _constraint_lines(ax, rows, limit, limits)
    values = [r.metrics[cost] for r in rows]
    if min(values) > 0 and max(values) / min(values) > 20:  # a wide spread reads better on a log axis
        ax.set_xscale("log")
    ax.margins(x=0.15, y=0.2)
    if ax.get_xscale() == "linear":
        ax.set_xlim(left=0)  # latency and size start at zero: distances to the origin are honest
    ax.set_xlabel(xlabel + "  (lower is better)")
    better = "higher" if limits.quality.higher_is_better else "lower"
    if not limits.quality.higher_is_better:
        ax.invert_yaxis()  # better stays up, whatever the metric
    ax.set_ylabel(f"{metric}  ({better} is better)")
    ax.set_title(f"{title}: {metric} vs {xlabel.split(',')[0].split(' (')[0]}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _note(row: Row, on_front: bool, recommended: str | None) -> str:
    """What the key says about a point besides its label."""
    notes = [n for n, cond in (("baseline", row.is_baseline), ("front", on_front), ("gated", row.status == "gated"),
                               ("RECOMMENDED", row.key == recommended)) if cond]
    return f"  ({', '.join(notes)})" if notes else ""


def _style(row: Row, on_front: bool) -> dict:
    if row.is_baseline:
        return {"marker": "*", "s": 260, "c": "black", "edgecolors": "black"}
    if row.status == "gated":
        return {"marker": "X", "s": 70, "c": "lightgray", "edgecolors": "gray"}
    if on_front:
        return {"marker": "o", "s": 80, "c": "tab:red", "edgecolors": "darkred"}
    return {"marker": "o", "s": 50, "c": "tab:blue", "edgecolors": "navy"}


def _constraint_lines(ax: object, rows: list[Row], limit: tuple[str, float | None], limits: Constraints) -> None:
    """Dashed lines at the cost limit (name, value) and at the quality bound (when there is one baseline)."""
    if limit[1] is not None:
        ax.axvline(limit[1], ls="--", color="tab:orange", lw=1, label=f"report.{limit[0]} = {limit[1]:g}")
    q = limits.quality
    bases = {r.base.get(q.metric) for r in rows if r.base.get(q.metric) is not None}
    if limits.max_loss is not None and len(bases) == 1:
        bound = q.bound(bases.pop(), limits.max_loss)
        ax.axhline(bound, ls="--", color="tab:orange", lw=1,
                   label=f"{q.metric} bound {bound:.4g} (report.max_loss = {limits.max_loss:g})")
