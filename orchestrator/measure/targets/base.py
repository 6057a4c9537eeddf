"""The Target contract: where an artifact is measured (ONNX Runtime in Python, a browser tab, Node.js, ...).

A target is a room: everything the rest of the program knows about it is declared here, on its class, and
read through the registry (orchestrator.measure.targets), never by its name:

- which artifact formats it measures (`formats`), whether `eval.targets` lists it (`selectable`) and its
  settings schema (`Settings`, the dataclass of its `eval.<name>` block);
- its metric prefix (`prefix`: `browser_...`; `ort`, the reference, has none), its report columns
  (`columns`, `markdown_columns`), its plot labels (`title`, `latency_metric`, `size_metric`, `size_label`),
  the MLflow ratio metrics against the baseline (`ratios`) and the constraints it adds to `report` (`limits`);
- its cache-key data (`key_data`, `eval_key`), its availability check (`check`, `check_task`), its run tags
  (`tags`) and the measurement itself (`measure`).

Its measurements are cached per node under `eval_key`, made of the settings it reads and the versions of the
runtime it measures with, so changing a browser setting re-measures in the browser only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.hashing import digest

SIZE = "model_size_mb"  # the file size every ONNX measurement reports (the default size axis)

Column = tuple[str, str, str]  # (metric, column title, format), as the report's tables take them


class TargetError(RuntimeError):
    """A measurement on this target failed (the node's other measurements stand)."""


@dataclass(frozen=True)
class Limit:
    """A constraint a target adds to the report: `report.<key>` bounds `metric` from above (None = off)."""

    key: str
    metric: str


@dataclass(frozen=True)
class Subject:
    """The node being measured: its key, its measured artifact and that artifact's format, and its root
    baseline's key and measured artifact (both None when the node is a root)."""

    key: str
    model: Path
    format: str = "onnx"
    root_key: str | None = None
    root_model: Path | None = None


class Target:
    """Base class: a name and `measure`; every other member has a default that fits an ONNX target."""

    name: ClassVar[str]
    title: ClassVar[str] = ""  # how plots name it ("browser (onnxruntime-web)"); '' = its name
    where: ClassVar[str] = ""  # how a sentence places a number there ("in the browser"); '' = "on <name>"
    formats: ClassVar[tuple[str, ...]] = ("onnx",)  # artifact formats it can measure
    selectable: ClassVar[bool] = True  # listed in eval.targets (False: its own settings block switches it on)
    Settings: ClassVar[type | None] = None  # dataclass of its `eval.<name>` block; None = no block
    columns: ClassVar[tuple[Column, ...]] = ()  # report columns, shown where some row has the metric
    markdown_columns: ClassVar[tuple[Column, ...] | None] = None  # the Markdown report's; None = `columns`
    size_metric: ClassVar[str] = SIZE  # the cost the size front, plot and ratio use here (the summary says MB)
    size_label: ClassVar[str] = "model size on disk (MB)"
    size_word: ClassVar[str] = "size"  # in the recommendation's sentence
    limits: ClassVar[tuple[Limit, ...]] = ()  # constraints it adds to `report`

    @property
    def prefix(self) -> str:
        """What every metric it reports starts with."""
        return f"{self.name}_"

    @property
    def latency_metric(self) -> str:
        """Its batch-1 p50 latency: the latency front, plot and `report.max_latency_ms` use it."""
        return f"{self.prefix}latency_p50_ms"

    @property
    def label(self) -> str:
        """Its display name."""
        return self.title or self.name

    @property
    def place(self) -> str:
        """Where its numbers were taken, for a sentence."""
        return self.where or f"on {self.name}"

    def ratios(self) -> dict[str, tuple[str, bool]]:
        """MLflow ratio metrics against the node's baseline: name -> (metric, True for baseline/own (a
        speed-up), False for own/baseline (a size ratio))."""
        out = {f"{self.name}_speedup": (self.latency_metric, True)}
        if self.size_metric != SIZE:
            out[f"{self.size_metric.removesuffix('_mb')}_ratio"] = (self.size_metric, False)
        return out

    def requested(self, settings: Any) -> bool:
        """Whether the sweep asks for it (eval.targets lists it)."""
        return self.name in settings.targets

    def applies(self, task: Any, node: Subject) -> bool:
        """Whether it measures this node of this task (beyond the node's format)."""
        return True

    def check(self, settings: Any) -> None:
        """Before any compute: raise ConfigError (naming eval.targets and the install step) if it cannot run here."""

    def check_task(self, task_cls: type, settings: Any) -> None:
        """At validation: raise ConfigError if it cannot measure this task's artifacts."""

    def key_data(self, settings: Any) -> dict[str, Any]:
        """What its numbers depend on: its settings and runtime versions (hashed into the cache key)."""
        return {}

    def eval_key(self, settings: Any, node: Subject) -> str:
        """The cache key of its measurements of `node` under `settings` (file eval/<key>.json of the node)."""
        return f"{self.name}-{digest({'target': self.name, **self.key_data(settings)})}"

    def tags(self, settings: Any) -> dict[str, str]:
        """Run tags recording the runtime (e.g. the browser and onnxruntime-web versions)."""
        return {}

    def measure(self, model: Path, task: Any, settings: Any, reference: Path | None = None) -> dict[str, float]:
        """Metrics of the artifact at `model` (reference: the root baseline's, None for the root itself);
        raise TargetError when it cannot be measured here."""
        raise NotImplementedError
