"""Config schemas of measurement settings beside ONNX Runtime's: the browser and node targets
(`eval.browser.*`, `eval.node.*`), the target names, and speculative decoding (`eval.speculative`).

Plain dataclasses, no runtime imports: the config schema (and so the planner) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import check_choice, check_range

TARGET_NAMES = ("ort", "browser", "node")


@dataclass
class BrowserConfig:
    """The browser target: onnxruntime-web WASM threads, the Chromium to drive ('' = found on PATH)."""

    threads: int = 1
    executable: str = ""
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        check_range("threads", self.threads, 1, 64)
        check_range("timeout_s", self.timeout_s, 1.0, 86400.0)


@dataclass
class NodeConfig:
    """The node target: onnxruntime-node intra-op threads."""

    threads: int = 1
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        check_range("threads", self.threads, 1, 256)
        check_range("timeout_s", self.timeout_s, 1.0, 86400.0)


@dataclass
class SpeculativeConfig:
    """Measure every LM node as the draft model of `target` in greedy speculative decoding.

    target: the model that verifies (`baseline`: the sweep's root; null: off); k: draft tokens per round;
    prompts: test prompts decoded; tokens: new tokens generated per prompt (see tasks/lm_spec).
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
