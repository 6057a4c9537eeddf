"""The Target contract: where an artifact is measured (ONNX Runtime in Python, a browser tab, Node.js).

A target measures one ONNX file for one task and returns metrics prefixed by its name (`browser_...`),
except `ort`, whose names stay as they are. Its measurements are cached per node under a key made of
the settings it reads and the versions of the runtime it measures with (`key_data`), so changing a
browser setting re-measures in the browser only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar


class TargetError(RuntimeError):
    """A measurement on this target failed (the node's other measurements stand)."""


class Target:
    """Base class: `name`, `measure`, and the checks that run before any compute."""

    name: ClassVar[str]

    def check(self, settings: Any) -> None:
        """Raise ConfigError (naming eval.targets and the install step) if this target cannot run here."""

    def key_data(self, settings: Any) -> dict[str, Any]:
        """What this target's numbers depend on: its settings and runtime versions (hashed into the cache key)."""
        return {}

    def tags(self, settings: Any) -> dict[str, str]:
        """Run tags recording the runtime (e.g. the browser and onnxruntime-web versions)."""
        return {}

    def measure(self, model: Path, task: Any, settings: Any) -> dict[str, float]:
        """Metrics of the ONNX model at `model` on this target; raise TargetError when it cannot be measured."""
        raise NotImplementedError
