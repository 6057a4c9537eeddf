"""Trade-off logic, pure: Pareto fronts over (quality up, cost down) and the constrained recommendation.

Quality is whatever the task declares (orchestrator.tasks.quality): `Row.q` orients its metric so that
higher is better and `Row.loss` says how much worse than the baseline a row is; every comparison goes
through them, so this module never names a metric of quality.

No MLflow, no plotting: rows come from a sweep's results or from MLflow alike, so the report printed at
the end of a sweep and the one rebuilt later are computed by the same code from the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.measure import targets
from orchestrator.tasks.quality import ACCURACY, Quality

LATENCY, SIZE = "latency_p50_ms", "model_size_mb"
LOSS = "max_loss"  # the quality constraint: the task's loss against the baseline (points of drop, or a ratio)


@dataclass(frozen=True)
class Axes:
    """Which numbers the fronts, constraints and recommendation use: those of `report.target`, as that target
    declares them (ort: latency_p50_ms and model_size_mb; see orchestrator.measure.targets.base)."""

    target: str = "ort"
    quality: Quality = ACCURACY  # the task's contract: which metric, which way is better

    @property
    def measured_on(self) -> targets.Target:
        """The target whose numbers these are."""
        return targets.get(self.target)

    @property
    def latency(self) -> str:
        """The latency metric (p50, batch 1)."""
        return self.measured_on.latency_metric

    @property
    def size(self) -> str:
        """The size metric."""
        return self.measured_on.size_metric


ORT_AXES = Axes()
MEASURED = ("done", "cached")  # gated rows are measured too, but ruled out: they failed the recipe's gate
EPS = 1e-9  # float slack: 0.90 - 0.88 is 0.0200000000000000178, which must still meet a 0.02 limit


@dataclass
class Row:
    """One variant (or baseline): its label, status, own metrics and its root baseline's metrics."""

    label: str
    key: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    base: dict[str, float] = field(default_factory=dict)
    is_baseline: bool = False
    axes: Axes = ORT_AXES

    @property
    def candidate(self) -> bool:
        """Measured, not gated, with every metric the fronts and constraints need."""
        return self.status in MEASURED and all(k in self.metrics for k in (self.axes.quality.metric,
                                                                          self.axes.latency, self.axes.size))

    @property
    def quality(self) -> float | None:
        """The task's quality metric of this row, as measured."""
        return self.metrics.get(self.axes.quality.metric)

    @property
    def q(self) -> float:
        """The quality metric, oriented so that higher is better."""
        return self.axes.quality.oriented(self.metrics[self.axes.quality.metric])

    @property
    def loss(self) -> float | None:
        """How much worse than its own baseline (a drop in points, or a ratio; see Quality), None if unknown."""
        return self.axes.quality.loss_of(self.metrics, self.base)

    @property
    def collapsed(self) -> bool:
        """Its loss passes the task's collapse threshold (five points of accuracy, 1.5x perplexity)."""
        return self.axes.quality.collapsed(self.loss)

    def ratio(self, metric: str) -> float | None:
        """baseline / own value of `metric` (e.g. 2.0 = twice as fast or half the size)."""
        own, base = self.metrics.get(metric), self.base.get(metric)
        return base / own if own and base is not None else None


@dataclass
class Constraints:
    """report.max_* from the config; None = unconstrained. `max_loss` is in the task's loss (Quality)."""

    max_loss: float | None = None
    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    target: str = "ort"
    quality: Quality = ACCURACY
    contributed: dict[str, float] = field(default_factory=dict)  # the targets' own limits (report.max_download_mb)

    @classmethod
    def from_dict(cls, values: dict[str, Any], quality: Quality = ACCURACY) -> Constraints:
        """From the `report` config block (unknown keys ignored, None kept); the task-named key of the loss
        (`max_accuracy_drop`, `max_perplexity_ratio`) stands for `max_loss` (validation refuses the others)."""
        limits = {k: (None if values.get(k) is None else float(values[k])) for k in cls.__dataclass_fields__
                  if k not in ("target", "quality", "contributed")}
        if limits[LOSS] is None and values.get(quality.legacy_key) is not None:
            limits[LOSS] = float(values[quality.legacy_key])
        contributed = {k: float(values[k]) for k in targets.limits() if values.get(k) is not None}
        return cls(**limits, target=str(values.get("target") or "ort"), quality=quality, contributed=contributed)

    def get(self, name: str) -> float | None:
        """The limit `report.<name>`, one of the fields or one a target contributes; None = unset."""
        return self.contributed.get(name) if name in targets.limits() else getattr(self, name, None)

    @property
    def axes(self) -> Axes:
        """The metrics of `target`, ranked by `quality`."""
        return Axes(self.target, self.quality)

    def active(self) -> dict[str, float]:
        """The constraints that are set, by config key."""
        own = {k: v for k, v in vars(self).items() if v is not None and k not in ("target", "quality", "contributed")}
        return {**own, **self.contributed}

    def value(self, name: str, row: Row) -> float | None:
        """The row's number that constraint `name` limits (max_latency_ms: on report.target's latency)."""
        if name in self.contributed:
            return row.metrics.get(targets.limits()[name].metric)
        return {LOSS: row.loss, "max_latency_ms": row.metrics.get(self.axes.latency),
                "max_size_mb": row.metrics.get(SIZE)}[name]

    def violated(self, row: Row, skip: str | None = None) -> list[str]:
        """Names of the active constraints `row` breaks (an unknown value breaks it), `skip` left out."""
        out = []
        for name, limit in self.active().items():
            value = self.value(name, row)
            if name != skip and (value is None or value > limit + EPS):
                out.append(name)
        return out


def dominates(a: Row, b: Row, cost: str) -> bool:
    """a is at least as good (quality) and as cheap as b, and strictly better in one of the two."""
    acc_a, acc_b, c_a, c_b = a.q, b.q, a.metrics[cost], b.metrics[cost]
    return acc_a >= acc_b and c_a <= c_b and (acc_a > acc_b or c_a < c_b)


def front(rows: list[Row], cost: str) -> list[Row]:
    """The candidates no other candidate dominates, cheapest first."""
    cands = [r for r in rows if r.candidate]
    members = [r for r in cands if not any(dominates(o, r, cost) for o in cands if o is not r)]
    return sorted(members, key=lambda r: (r.metrics[cost], -r.q, r.label))


def layers(rows: list[Row], cost: str) -> dict[str, int]:
    """Non-dominated sorting: key -> 1 for the front, 2 for the front of what remains, and so on."""
    left, rank, out = [r for r in rows if r.candidate], 1, {}
    while left:
        layer = front(left, cost)
        out.update({r.key: rank for r in layer})
        left = [r for r in left if r.key not in out]
        rank += 1
    return out


@dataclass
class Recommendation:
    """The chosen row (None when nothing qualifies) and the reasons, one sentence per line."""

    row: Row | None
    lines: list[str]

    @property
    def text(self) -> str:
        """The reasons as one printable block."""
        return "\n".join(self.lines)


def recommend(rows: list[Row], limits: Constraints) -> Recommendation:
    """The fastest (p50) candidate meeting every constraint, ties to better quality then smaller size.

    With no quality constraint, collapsed variants (Quality.collapse) are not eligible: the fastest model
    is often one that no longer works, and nobody asked for it; an explicit report.max_loss overrides.
    """
    cands = [r for r in rows if r.candidate]
    if not cands:
        return Recommendation(None, ["No measured variant: nothing to recommend."])
    excluded = [r for r in cands if r.collapsed] if limits.max_loss is None else []
    eligible = [r for r in cands if r not in excluded]
    note = [excluded_line(excluded, limits)] if excluded else []
    ok = [r for r in eligible if not limits.violated(r)]
    if not ok:
        return Recommendation(None, [f"No variant meets every constraint ({describe(limits)}).",
                                     *binding(eligible, limits), *note])
    best = min(ok, key=_speed_key)
    lat = limits.axes.latency
    why = (f"the fastest ({lat}) of the {len(ok)} of {_n(len(cands))} that meet every constraint "
           f"({describe(limits)})" if limits.active() else
           f"the fastest ({lat}) of {_n(len(cands))}; no constraint is set (report.max_loss, "
           "report.max_latency_ms, report.max_size_mb" + "".join(f", report.{k}" for k in targets.limits()) + ")")
    return Recommendation(best, [f"Recommended: {best.label}: {summary(best)}.", f"Why: {why}.", *note])


def excluded_line(rows: list[Row], limits: Constraints) -> str:
    """The sentence that names the collapsed variants left out of the recommendation, and how to include them."""
    quality = limits.quality
    names = ", ".join(f"{r.label} ({quality.describe_loss(r.loss)})" for r in rows if r.loss is not None)
    bound = quality.loss_fmt.format(quality.collapse).lstrip("+")
    return (f"Not eligible, collapsed ({quality.limit_words()} past {bound}, no report.max_loss set): {names}; "
            f"set report.max_loss (e.g. report.max_loss={bound}) to rank them too.")


def binding(cands: list[Row], limits: Constraints) -> list[str]:
    """Which constraint binds: those whose relaxation alone admits a variant, with the relaxation needed."""
    lines = []
    for name, limit in limits.active().items():
        rejects = sum(name in limits.violated(r) for r in cands)
        admitted = [r for r in cands if not limits.violated(r, skip=name) and limits.value(name, r) is not None]
        if admitted:
            best = min(admitted, key=lambda r: (limits.value(name, r), *_speed_key(r)))
            lines.append(f"Binding: report.{name}={limit:g} rejects {rejects} of {len(cands)}; relaxing it alone "
                         f"to {limits.value(name, best):.4g} admits {best.label} ({summary(best)}).")
    if lines:
        return lines
    counts = ", ".join(f"report.{n}={v:g} rejects {sum(n in limits.violated(r) for r in cands)}"
                       for n, v in limits.active().items())
    return [f"No single constraint binds alone (relaxing any one is not enough): {counts} of {len(cands)}."]


def describe(limits: Constraints) -> str:
    """The active constraints in words."""
    words = {LOSS: limits.quality.limit_words() + " <= {:g}", "max_latency_ms": limits.axes.latency + " <= {:g}",
             "max_size_mb": "model_size_mb <= {:g}",
             **{k: lim.metric + " <= {:g}" for k, lim in targets.limits().items()}}
    active = limits.active()
    return ", ".join(words[k].format(v) for k, v in active.items()) if active else "none set"


def summary(row: Row) -> str:
    """The quality and its loss, p50 latency and size of a row, in one phrase."""
    m, loss, ax = row.metrics, row.loss, row.axes
    where = "" if ax.target == "ort" else f" in {ax.target}"
    size = ax.measured_on.size_word
    said = f" ({ax.quality.describe_loss(loss)})" if loss is not None and not row.is_baseline else ""
    quality = f"{ax.quality.metric} {ax.quality.fmt.format(m[ax.quality.metric])}{said}"
    return f"{quality}, p50{where} {m[ax.latency]:.4g} ms, {size} {m[ax.size]:.4g} MB"


def _n(count: int) -> str:
    return f"{count} measured variant{'s' if count != 1 else ''}"


def _speed_key(row: Row) -> tuple:
    return row.metrics[row.axes.latency], -row.q, row.metrics[row.axes.size], row.label
