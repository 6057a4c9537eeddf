"""Speculative decoding as a measurement target the LM task family provides (`eval.speculative`).

Not listed in `eval.targets`: its own block switches it on (`eval.speculative.target=baseline`). Every LM
node but the root is then measured as the draft of its root baseline (see orchestrator.tasks.lm.spec for
the loop and the `spec_*` metrics). The LM tasks declare it (`LMTask.targets`), and
orchestrator.config.plugins.install() adds it to the target registry, so the engine measures it like any
other target and never imports this family.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import check_choice, check_range
from orchestrator.hashing import digest
from orchestrator.measure.targets import Subject, Target, TargetError
from orchestrator.tasks.capabilities import Drafting, require, supports


@dataclass
class SpeculativeConfig:
    """Measure every LM node as the draft model of `target` in greedy speculative decoding.

    target: the model that verifies (`baseline`: the sweep's root; null: off); k: draft tokens per round;
    prompts: test prompts decoded; tokens: new tokens generated per prompt (see tasks/lm/spec).
    """

    target: str | None = None
    k: int = 4
    prompts: int = 4
    tokens: int = 32

    def __post_init__(self) -> None:
        if self.target is not None:
            check_choice("target", self.target, ["baseline"])
        check_range("k", self.k, 1, 64)
        check_range("prompts", self.prompts, 1, 1000)
        check_range("tokens", self.tokens, 2, 4096)


class SpeculativeTarget(Target):
    """This node drafting for the root baseline, both in ONNX Runtime with a KV cache, or both in llama.cpp for a
    GGUF node (`spec_*` metrics)."""

    name = "speculative"
    title = "speculative decoding (ONNX Runtime; llama.cpp for GGUF drafts)"
    formats = ("onnx", "gguf")
    selectable = False
    Settings = SpeculativeConfig

    @property
    def prefix(self) -> str:
        return "spec_"

    def ratios(self) -> dict[str, tuple[str, bool]]:
        return {}  # spec_speedup is itself a ratio (over the target decoding alone)

    def requested(self, settings: Any) -> bool:
        return bool(settings.block(self.name).get("target"))

    def applies(self, task: Any, node: Subject) -> bool:
        return supports(type(task), Drafting) and node.root_key is not None  # the root does not draft for itself

    def check_task(self, task_cls: type, settings: Any) -> None:
        require(task_cls, Drafting, "eval.speculative", settings.block(self.name))

    def eval_key(self, settings: Any, node: Subject) -> str:
        """Keyed by the settings, the verifying node and the environment (the key it has always had)."""
        from orchestrator.measure.evaluate import environment
        from orchestrator.tasks.lm.spec import VERSION

        data = {"speculative": settings.block(self.name), "threads": settings.threads, "target": node.root_key,
                "version": VERSION, "environment": environment()}
        if node.format == "gguf":  # measured in llama.cpp: its build too (ONNX drafts keep the key they had)
            from orchestrator.artifacts.llamacpp import versions

            data["llama_cpp"] = versions()
        return "spec-" + digest(data)

    def measure(self, model: Path, task: Any, settings: Any, reference: Path | None = None) -> dict[str, float]:
        from orchestrator.tasks.lm import spec

        if reference is None:
            raise TargetError("speculative decoding needs the root baseline's model to verify")
        try:
            return spec.measure(task, model, reference, settings.block(self.name), settings.threads)
        except Exception as err:  # like any target's: reported, the node's other measurements stand
            raise TargetError(f"{type(err).__name__}: {err}") from err
