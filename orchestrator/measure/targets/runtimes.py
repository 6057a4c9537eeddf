"""`llamacpp` and `genai`: LLM artifacts measured in the runtimes they ship to. A GGUF runs in llama.cpp (directly,
or through Ollama); an ONNX Runtime GenAI folder runs in ONNX Runtime GenAI (what Olive builds LLMs for).

Each is the measuring target of its format: such a node has no plain ONNX for `ort` to measure, so this target
takes its place and reports the same metric names, unprefixed (perplexity on the task's own test windows and
token ids, decoding speed at `eval.threads`, load time, peak RSS, size, KV cache per 1k tokens). So GGUF, GenAI
and ONNX leaves of one sweep share the report's axes, fronts and recommendation; the run's
`orchestrator.runtime` tag and the variant's chain tell them apart. The numbers come from the task
(`measure_runtime` of the `LLMRuntimes` capability), which runs the pinned runtime in a child process.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.measure.targets.base import Target


class RuntimeTarget(Target):
    """The measuring target of one artifact format (`formats[0]`), in the runtime `module` drives."""

    selectable = False  # not an extra measurement: the node's own, for every node of its format
    measures_format = True  # its metrics are the node's own (quality included), as ort's are for ONNX
    module: ClassVar[str]  # the artifacts module that runs it (versions(), measure_child())

    @property
    def prefix(self) -> str:
        return ""

    def requested(self, settings: Any) -> bool:
        return False

    def ratios(self) -> dict[str, tuple[str, bool]]:
        return {}  # the node's own ratios are computed as for every node (speedup, size_ratio)

    def tags(self, settings: Any) -> dict[str, str]:
        versions = importlib.import_module(self.module).versions()
        return {f"{self.name}_{k}": str(v) for k, v in versions.items()}

    def measure(self, model: Path, task: Any, settings: Any, reference: Path | None = None) -> dict[str, float]:
        return task.measure_runtime(self.formats[0], model, settings, reference)


class LlamaCppTarget(RuntimeTarget):
    """llama.cpp (the prebuilt libllama of npm's @node-llama-cpp/linux-x64), `eval.threads` threads."""

    name = "llamacpp"
    title = "llama.cpp"
    where = "in llama.cpp"
    formats = ("gguf",)
    module = "orchestrator.artifacts.llamacpp"


class GenAITarget(RuntimeTarget):
    """ONNX Runtime GenAI (onnxruntime-genai, the `genai` extra), `eval.threads` intra-op threads."""

    name = "genai"
    title = "ONNX Runtime GenAI"
    where = "in ONNX Runtime GenAI"
    formats = ("genai",)
    module = "orchestrator.artifacts.genai"
