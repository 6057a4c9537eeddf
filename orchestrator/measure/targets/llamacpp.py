"""`llamacpp`: a GGUF artifact measured in llama.cpp, the runtime it ships to (directly, or through Ollama).

The measuring target of the `gguf` format: a GGUF node has no ONNX for `ort` to measure, so this target
takes its place and reports the same metric names, unprefixed (perplexity on the task's own test windows
and token ids, decoding speed at `eval.threads`, load time, peak RSS, size, KV cache per 1k tokens). So a
GGUF leaf and the ONNX leaves of one sweep share the report's axes, fronts and recommendation; the run's
`runtime` tag and the variant's chain tell them apart. The numbers come from the task (`measure_gguf` of
the `LlamaCpp` capability), which runs the pinned prebuilt llama.cpp in a child process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.measure.targets.base import Target


class LlamaCppTarget(Target):
    """llama.cpp (the prebuilt libllama of npm's @node-llama-cpp/linux-x64), `eval.threads` threads."""

    name = "llamacpp"
    title = "llama.cpp"
    where = "in llama.cpp"
    formats = ("gguf",)
    selectable = False  # not an extra measurement: the node's own, for every GGUF node
    measures_format = True  # its metrics are the node's own (quality included), as ort's are for ONNX

    @property
    def prefix(self) -> str:
        return ""

    def requested(self, settings: Any) -> bool:
        return False

    def ratios(self) -> dict[str, tuple[str, bool]]:
        return {}  # the node's own ratios are computed as for every node (speedup, size_ratio)

    def tags(self, settings: Any) -> dict[str, str]:
        from orchestrator.artifacts.llamacpp import versions

        return {f"llamacpp_{k}": v for k, v in versions().items()}

    def measure(self, model: Path, task: Any, settings: Any, reference: Path | None = None) -> dict[str, float]:
        return task.measure_gguf(model, settings, reference)
