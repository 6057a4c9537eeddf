"""The Task contract: model + data + metric. A task trains or loads the baseline that roots every DAG.

This is the core every task implements; the opt-in parts are in orchestrator.tasks.capabilities.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from orchestrator.tasks.quality import ACCURACY, Columns, Quality

# The methods without which no baseline can be built, stored or scored, and how each is called: a task
# (a plugin above all) must define them itself; the rest of the contract has working defaults.
REQUIRED = {"build_baseline": "build_baseline()", "batches": "batches(split, batch_size, shuffle=False)",
            "architecture": "architecture(spec)"}


class Task:
    """Base class: the core every task implements. Subclasses provide data splits, the baseline model and the metric.

    Inputs are whatever `forward` accepts: a tensor for plain models, a dict of tensors for transformers.
    `onnx_batches` yields the same data as ONNX Runtime feeds, so torch and ONNX artifacts are scored alike.
    What only some tasks can do (drop layers, trim a vocabulary, a KV-cache graph, ...) is an opt-in capability a
    task declares by inheriting it: see orchestrator.tasks.capabilities.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type]
    libraries: ClassVar[tuple[str, ...]] = ("torch",)  # distributions whose versions key the baseline
    input_names: ClassVar[list[str]] = ["input"]
    output_names: ClassVar[list[str]] = ["logits"]
    # the quality contract: the metric the gate and the report rank by, its direction, how a loss is said
    quality: ClassVar[Quality] = ACCURACY
    columns: ClassVar[Columns] = Columns()  # the report columns this task swaps in or adds
    report_notes: ClassVar[tuple[str, ...]] = ()  # printed under the report (e.g. where the model's weights come from)
    # the split stages may tune on (quantize's sensitivity and accuracy control): never the test split
    validation_split: ClassVar[str] = "val"
    check_examples: ClassVar[int] = 8  # test examples an export is checked on (an LM window is 256 of them)
    # set by declaring the capability of the same name (see orchestrator.tasks.capabilities), which the measurement
    # layer, below the tasks, cannot import; a plugin that sets one by hand is still taken to have the capability
    kv_cache: ClassVar[bool] = False  # KVCache
    structured_pruning: ClassVar[bool] = False  # StructuredPruning
    variable_length: ClassVar[bool] = False  # VariableLength
    # measurement targets this family provides (orchestrator.measure.targets.Target subclasses), added to the
    # target registry by orchestrator.config.plugins.install(): e.g. the LMs' speculative decoding
    targets: ClassVar[tuple[type, ...]] = ()
    # torch threads of its nodes when executor.torch_threads is not set: 0 = every core the worker has
    torch_threads: ClassVar[int] = 0

    def __init__(self, params: Any, seed: int) -> None:
        self.params, self.seed = params, seed

    @classmethod
    def missing(cls) -> list[str]:
        """The REQUIRED methods this class does not define (as they are called), or Params when it has none."""
        lacking = [call for name, call in REQUIRED.items() if getattr(cls, name) is getattr(Task, name)]
        return lacking + ([] if isinstance(getattr(cls, "Params", None), type) else ["Params (a dataclass)"])

    @classmethod
    def baseline_warnings(cls, metrics: dict[str, float]) -> list[str]:
        """What is implausible about a baseline's measured `metrics` (e.g. an LM that codes its test text worse
        than gzip: a tokenizer or weights gone wrong), each a line the report prints loudly; [] = nothing."""
        return []

    @classmethod
    def check(cls, params: Any) -> None:
        """Raise ConfigError (naming the task key) for model or data files this task cannot use.

        Runs in preflight, before any node computes, so it must be cheap: open headers, tables of contents and
        a bounded amount of text; never load weights or train. Default: nothing to check.
        """

    @classmethod
    def sources(cls, params: dict[str, Any]) -> dict[str, str]:
        """Files or folders the baseline is made from (name -> path), fingerprinted by content into its key."""
        return {}

    def build_baseline(self) -> Any:
        """Train (or load) the fp32 baseline torch model; deterministic for a given seed."""
        raise NotImplementedError

    def batches(self, split: str, batch_size: int, shuffle: bool = False) -> Iterator[tuple[Any, Any]]:
        """(inputs, labels) torch batches of `split` ('train', 'test', 'calib'; tasks may add 'val')."""
        raise NotImplementedError

    def forward(self, model: Any, inputs: Any) -> Any:
        """Logits of `model` on `inputs`."""
        return model(inputs)

    def example_inputs(self, batch_size: int = 1) -> tuple:
        """Positional example inputs for tracing (export, dependency graphs)."""
        inputs, _ = next(self.batches("test", batch_size))
        return (inputs,)

    def onnx_batches(self, split: str, batch_size: int,
                     pad_to: str = "max_length") -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """(feeds, labels) numpy batches of `split` for ONNX Runtime (`pad_to`: see EvalSettings; text tasks)."""
        for inputs, labels in self.batches(split, batch_size):
            yield {self.input_names[0]: inputs.numpy()}, labels.numpy()

    def latency_feeds(self, pad_to: str, count: int) -> list[dict[str, np.ndarray]]:
        """The batch-1 inputs latency is timed on, in turn (default: the first test example)."""
        feeds, _ = next(self.onnx_batches("test", 1))  # (fixed-size inputs: nothing to pad)
        return [feeds]

    def onnx_logits(self, sess: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The logits an ONNX Runtime session computes on `feeds` (tasks with extra graph inputs complete them)."""
        return sess.run(None, feeds)[0]

    def measure_onnx(self, path: Path, settings: Any, reference: Path | None) -> dict[str, float]:
        """Every `ort` metric of the ONNX file at `path` (see orchestrator.measure.evaluate); LMs measure their
        own way."""
        from orchestrator.measure.evaluate import measure_classifier

        return measure_classifier(self, path, settings, reference)

    def score(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Quality metrics of predictions (at least `accuracy`, in 0..1).

        Classification by default: `accuracy` and macro `f1` (always, see orchestrator.measure.metrics), through
        the `evaluate` modules shipped in the package, so it works offline.
        """
        from orchestrator.measure.metrics import classification

        return classification(logits.argmax(-1), labels)

    def protected_modules(self, model: Any) -> list:
        """Modules structured pruning must not shrink (the classifier head)."""
        return []

    def pruning_kwargs(self, model: Any, ratio: float) -> dict[str, Any]:
        """Extra torch-pruning MetaPruner arguments (e.g. attention heads for transformers, pruned at `ratio`)."""
        return {}

    def after_prune(self, model: Any) -> Any:
        """Repair module attributes that pruning invalidated (e.g. head counts); returns the model."""
        return model

    def architecture_spec(self, model: Any) -> dict[str, Any]:
        """Plain data (JSON) that `architecture` needs to rebuild `model`'s architecture (default: none).

        Torch artifacts are stored without pickle (see orchestrator.artifacts.torch_io): the weights as safetensors,
        the structure as JSON, and the model is rebuilt from this spec on load.
        """
        return {}

    def architecture(self, spec: dict[str, Any]) -> Any:
        """A fresh torch model of the baseline's architecture, from `architecture_spec`'s data.

        Loading then resizes it to the stored shapes (what pruning changed) and loads the weights.
        """
        raise NotImplementedError(f"task {self.name!r} must define architecture(spec) to store torch models "
                                  "(see orchestrator.artifacts.torch_io)")

    def export(self, model: Any, path: Path, opset: int, exporter: str) -> None:
        """Write `model` as ONNX to `path` with a dynamic batch axis."""
        from orchestrator.artifacts.onnx_utils import torch_export

        torch_export(model, self.example_inputs(), path, self.input_names, self.output_names, opset, exporter)


def kept_layers(total: int, every: int = 1, count: int = 0) -> list[int]:
    """Indices of the layers a shrunk model keeps, always including the last (the head reads its output).

    `count` > 0: that many layers, spread evenly counting down from the last (6 layers: count 2 keeps
    2, 5; count 4 keeps 1, 2, 4, 5). Else every `every`-th layer counting down from the last (6 layers,
    every 2: 1, 3, 5).
    """
    if count > 0:
        count = min(count, total)
        return sorted({total - 1 - int(i * total / count) for i in range(count)})
    return list(range(total - 1, -1, -every))[::-1]
