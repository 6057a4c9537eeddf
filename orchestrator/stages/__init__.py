"""Stage registry: stable stage name -> Stage class. Adding a stage = its module + one line here."""

from __future__ import annotations

from orchestrator.stages.awq import AWQ
from orchestrator.stages.base import ONNX, TORCH, Earlier, Stage, StageContext, StageOutput
from orchestrator.stages.distill import Distill
from orchestrator.stages.export import Export
from orchestrator.stages.fakequant import FakeQuant
from orchestrator.stages.genai import GenAIStage
from orchestrator.stages.gguf import GGUFStage
from orchestrator.stages.graph import Graph
from orchestrator.stages.kvcache import KVCache
from orchestrator.stages.prune import Prune
from orchestrator.stages.quantize import Quantize
from orchestrator.stages.split import Split
from orchestrator.stages.trim import Trim

REGISTRY: dict[str, type[Stage]] = {cls.name: cls for cls in (Prune, Distill, Export, Quantize, FakeQuant, Graph,
                                                             KVCache, Split, Trim, GGUFStage, GenAIStage, AWQ)}
# plugin stages are added by orchestrator.config.plugins.install() (see orchestrator/tasks/__init__.py for why)

__all__ = ["ONNX", "TORCH", "REGISTRY", "Earlier", "Stage", "StageContext", "StageOutput", "get_stage",
           "written_name"]


def get_stage(name: str) -> type[Stage]:
    """The Stage class registered under `name` (KeyError lists the known names)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(sorted(REGISTRY))}") from None


def written_name(stage: str) -> str:
    """The name users write for `stage` (`quantize` for its torch twin `fakequant`; else itself)."""
    cls = REGISTRY.get(stage)
    return (cls.written_as if cls is not None and cls.written_as else stage)
