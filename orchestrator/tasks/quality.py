"""The quality contract: what a task's quality metric is called, which way is better, and how a loss is said.

A task declares one `Quality` (`Task.quality`); the gate, the report's constraints, the Pareto fronts, the
plots, the MLflow ratio metrics, the progress line and the recommendation read it, so nothing outside
`tasks/` knows `accuracy` from `perplexity`. A loss against the baseline is either points of drop
(`loss="drop"`: classifiers, own minus baseline oriented so that positive = worse) or a ratio
(`loss="ratio"`: language models, own over baseline oriented so that > 1 = worse).

Pure data, no imports beyond the standard library: the report rebuilt from MLflow alone uses it too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

DROP, RATIO = "drop", "ratio"


@dataclass(frozen=True)
class Quality:
    """One task's quality metric and the words and limits that go with it."""

    metric: str  # the metric key every node reports (`accuracy`, `perplexity`, `rmse`)
    higher_is_better: bool
    loss: str = DROP  # DROP: baseline - own (oriented); RATIO: own / baseline (oriented)
    title: str = ""  # the terminal column title (default: the metric)
    fmt: str = "{:.4f}"  # how a value prints
    collapse: float = 0.05  # a loss at least this large is a collapsed model (0.05 = five points; 1.5x)
    points: float = 1.0  # drops are said in points of this size (accuracy: 100 = percentage points)
    unit: str = ""  # what one point is called (`points`)

    def __post_init__(self) -> None:
        if self.loss not in (DROP, RATIO):
            raise ValueError(f"Quality.loss must be {DROP!r} or {RATIO!r}, got {self.loss!r}")

    @property
    def loss_metric(self) -> str:
        """The MLflow metric of a node's loss against its baseline (`accuracy_drop`, `perplexity_ratio`)."""
        return f"{self.metric}_{self.loss}"

    @property
    def legacy_key(self) -> str:
        """The task-named constraint key that means `max_loss` for this task (`max_accuracy_drop`)."""
        return f"max_{self.loss_metric}"

    @property
    def column(self) -> str:
        """The terminal column title of the metric."""
        return self.title or self.metric

    @property
    def loss_title(self) -> str:
        """The column title of the loss: `drop` or `x ppl`."""
        return "drop" if self.loss == DROP else f"x {self.column}"

    @property
    def loss_fmt(self) -> str:
        """How a loss prints."""
        return "{:+.4f}" if self.loss == DROP else "{:.3f}"

    @property
    def no_loss(self) -> float:
        """The loss of a variant as good as its baseline (0 points, 1.0x)."""
        return 0.0 if self.loss == DROP else 1.0

    def oriented(self, value: float) -> float:
        """`value` turned so that higher is better (what fronts compare)."""
        return value if self.higher_is_better else -value

    def loss_of(self, own: dict[str, float], base: dict[str, float]) -> float | None:
        """The loss of `own` against `base` (positive drop / ratio above 1 = worse); None if either is unknown."""
        mine, theirs = own.get(self.metric), base.get(self.metric)
        if mine is None or theirs is None:
            return None
        if self.loss == DROP:
            return theirs - mine if self.higher_is_better else mine - theirs
        if not mine or not theirs:
            return None
        return mine / theirs if not self.higher_is_better else theirs / mine

    def collapsed(self, loss: float | None) -> bool:
        """A loss past the collapse threshold: more than `collapse` points lost, or a ratio of `collapse` or more."""
        if loss is None:
            return False
        return loss > self.collapse + 1e-12 if self.loss == DROP else loss >= self.collapse - 1e-12

    def exceeds(self, loss: float | None, limit: float) -> bool:
        """Whether `loss` is over `limit` (float slack: a drop of exactly the limit meets it)."""
        return loss is None or loss > limit + 1e-9

    def bound(self, base: float, limit: float) -> float:
        """The worst metric value a variant may have when the baseline has `base` and max_loss is `limit`."""
        if self.loss == DROP:
            return base - limit if self.higher_is_better else base + limit
        return base * limit if not self.higher_is_better else base / limit

    def describe_loss(self, loss: float) -> str:
        """`0.80 points below`, `1.34x`: the loss in words, for gate messages and run descriptions."""
        if self.loss == RATIO:
            return f"{loss:.3f}x the baseline's"
        worse = "below" if self.higher_is_better else "above"
        better = "above" if self.higher_is_better else "below"
        scaled = abs(loss) * self.points
        amount = (f"{scaled:.2f}" if self.points != 1 else f"{scaled:.4g}") + (f" {self.unit}" if self.unit else "")
        return f"{amount} {worse if loss > 0 else better} the baseline's"

    def short_loss(self, loss: float) -> str:
        """`1.90x`, `12 points`: a loss in a table note."""
        if self.loss == RATIO:
            return f"{loss:.2f}x"
        return f"{loss * self.points:.3g}" + (f" {self.unit}" if self.unit else "")

    def legend(self) -> str:
        """What the loss column means, for the report's legend."""
        if self.loss == RATIO:
            return f"{self.loss_title} = {self.metric} / the baseline's"
        order = "baseline's minus the variant's" if self.higher_is_better else "variant's minus the baseline's"
        return f"{self.loss_title} = {self.metric}, the {order}"

    def limit_words(self) -> str:
        """What `max_loss` bounds, in words (`accuracy drop`, `perplexity ratio`)."""
        return f"{self.metric} {self.loss}"

    def as_tags(self) -> dict[str, str]:
        """The contract as run tags, so a report rebuilt from MLflow reads the same quality."""
        return {f"orchestrator.quality.{k}": str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Quality | None:
        """The contract `as_tags` logged, or None for sweeps logged before it existed."""
        prefix = "orchestrator.quality."
        found = {k[len(prefix):]: v for k, v in tags.items() if k.startswith(prefix)}
        if "metric" not in found:
            return None
        kinds: dict[str, Any] = {"higher_is_better": lambda v: v == "True", "collapse": float, "points": float}
        known = {k: kinds.get(k, str)(v) for k, v in found.items() if k in cls.__dataclass_fields__}
        return cls(**known)


Column = tuple[str, str, str]  # (metric key, title, format) of a report column


@dataclass(frozen=True)
class Columns:
    """How a task's numbers show in the report: columns swapped for its own, columns it adds, a legend note."""

    swap: dict[str, Column] = field(default_factory=dict)  # a generic column's key -> the task's column
    extra: tuple[Column, ...] = ()
    legend: str = ""


ACCURACY = Quality("accuracy", True, DROP, "acc", "{:.4f}", collapse=0.05, points=100.0, unit="points")
