"""Stage registry: stable stage name -> Stage class. Adding a stage = its module + one line here."""

from __future__ import annotations

from orchestrator.stages.base import ONNX, TORCH, Stage, StageContext, StageOutput
from orchestrator.stages.distill import Distill
from orchestrator.stages.export import Export
from orchestrator.stages.graph import Graph
from orchestrator.stages.prune import Prune
from orchestrator.stages.quantize import Quantize

REGISTRY: dict[str, type[Stage]] = {cls.name: cls for cls in (Prune, Distill, Export, Quantize, Graph)}

__all__ = ["ONNX", "TORCH", "REGISTRY", "Stage", "StageContext", "StageOutput", "get_stage"]


def get_stage(name: str) -> type[Stage]:
    """The Stage class registered under `name` (KeyError lists the known names)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(sorted(REGISTRY))}") from None
