"""`fakequant`: quantization in the torch domain, so later stages (prune, distill) can still run.

The planner uses it wherever `quantize` is written before a torch stage (`quantize>prune>distill`);
it can also be written directly (`fakequant`, e.g. for plain QAT). The weights are rounded to the
int8 / int4 (per-channel, symmetric) or fp16 grid and every later torch stage computes on that grid:
training after it is quantization-aware (STE), with a teacher it is quantization-aware distillation.
The export at the end of the chain (appended by the planner if the chain ends in torch) turns it into
a real low-precision ONNX model with the same grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import ConfigError, check_choice, check_range
from orchestrator.stages.base import TORCH, Earlier, Stage, StageContext, StageOutput

INHERIT = "inherit"
MODES = ["int8", "int4", "fp16"]


@dataclass
class FakeQuantParams:
    """mode: `inherit` takes `stages.quantize.mode`, so one sweep key drives both domains; or int8/int4/fp16.

    epochs: cross-entropy fine-tuning through the fake quantization right away (plain QAT; 0: none).
    """

    mode: str = INHERIT
    epochs: int = 0
    lr: float = 5e-4
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, [INHERIT, *MODES])
        check_range("epochs", self.epochs, 0, 1000)
        check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("batch_size", self.batch_size, 1, 65536)


class FakeQuant(Stage):
    """Round Conv2d/Linear weights to the quantization grid and keep them there in later torch stages."""

    name = "fakequant"
    version = "1"
    consumes = TORCH
    produces = TORCH
    Params = FakeQuantParams
    libraries = ("torch",)
    written_as = "quantize"
    lowered_by_export = True

    @classmethod
    def plan_params(cls, own: dict[str, Any], stages: dict[str, dict[str, Any]],
                    earlier: tuple[Earlier, ...], chain: str) -> dict[str, Any]:
        """Resolve `inherit` here, so the node key names the mode it really runs."""
        if own.get("mode", INHERIT) != INHERIT:
            return own
        mode = stages.get("quantize", {}).get("mode", "int8")
        if mode not in MODES:  # a future ONNX-only mode: refuse rather than guess
            raise ConfigError("stages.quantize.mode", mode, f"fakequant (quantize before a torch stage in "
                              f"{chain}) supports {', '.join(MODES)}")
        return {**own, "mode": mode}

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        from orchestrator.artifacts import simquant
        from orchestrator.artifacts.training import fit

        p = self.params
        if simquant.mode_of(model) not in (None, p.mode):
            raise ValueError(f"model is already fake-quantized as {simquant.mode_of(model)}, not {p.mode}")
        total = sum(t.numel() for t in model.parameters())
        quantized = simquant.apply(model, p.mode)
        if p.epochs:
            fit(ctx.task, model, p.epochs, p.lr, p.batch_size, seed=ctx.seed)
            simquant.snap(model)
        return StageOutput(model.eval(), {"quantized_params": float(quantized),
                                          "quantized_params_frac": quantized / max(total, 1)})
