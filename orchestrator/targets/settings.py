"""The config schemas of the browser and node targets (`eval.browser.*`, `eval.node.*`) and the target names.

Plain dataclasses, no runtime imports: the config schema (and so the planner) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import check_range

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
