"""`fakequant`: quantization in the torch domain, so later stages (prune, distill) can still run.

The planner uses it wherever `quantize` is written before a torch stage (`quantize>prune>distill`);
it can also be written directly (`fakequant`, e.g. for plain QAT). The weights are rounded to the grid
the final quantizer uses (int4: Linear weights in blocks of `stages.quantize.block_size`, symmetric, as
`quantize` int4's MatMulNBits; int8 and Conv2d: per output channel; fp16) and every later torch stage computes on it,
so a quantize-first order is judged on the grid a quantize-last one ends on:
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

    block_size (int4): `inherit` takes `stages.quantize.block_size` when `stages.quantize.symmetric` (the
    final int4 grid), else 0; 0 = one scale per output channel; a power of two = Linear weights in blocks.
    epochs: cross-entropy fine-tuning through the fake quantization right away (plain QAT; 0: none).
    """

    mode: str = INHERIT
    block_size: Any = INHERIT
    epochs: int = 0
    lr: float = 5e-4
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, [INHERIT, *MODES])
        if self.block_size != INHERIT and (not isinstance(self.block_size, int) or isinstance(self.block_size, bool)
                                           or self.block_size < 0 or self.block_size & (self.block_size - 1)):
            raise ConfigError("block_size", self.block_size, "must be inherit, 0 (per output channel) or a power "
                              "of two (16, 32, ...)")
        check_range("epochs", self.epochs, 0, 1000)
        check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("batch_size", self.batch_size, 1, 65536)


class FakeQuant(Stage):
    """Round Conv2d/Linear weights to the quantization grid and keep them there in later torch stages."""

    name = "fakequant"
    version = "1"  # int4 blocks are keyed by their own param (block_size); per-channel nodes keep their keys
    consumes = TORCH
    produces = TORCH
    Params = FakeQuantParams
    libraries = ("torch",)
    written_as = "quantize"
    lowered_by_export = True

    @classmethod
    def plan_params(cls, own: dict[str, Any], stages: dict[str, dict[str, Any]],
                    earlier: tuple[Earlier, ...], chain: str) -> dict[str, Any]:
        """Resolve `inherit` here, so the node key names the grid it really runs: the mode, and for int4 the
        block size (absent for the per-channel modes)."""
        quantize = stages.get("quantize", {})
        mode = own.get("mode", INHERIT)
        if mode == INHERIT:
            mode = quantize.get("mode", "int8")
            if mode not in MODES:  # a future ONNX-only mode: refuse rather than guess
                raise ConfigError("stages.quantize.mode", mode, f"fakequant (quantize before a torch stage in "
                                  f"{chain}) supports {', '.join(MODES)}")
        out = {k: v for k, v in own.items() if k != "block_size"} | {"mode": mode}
        block = own.get("block_size", INHERIT)
        if block == INHERIT:
            block = quantize.get("block_size", 32) if quantize.get("symmetric", True) else 0
        if mode == "int4" and block:
            out["block_size"] = block
        return out

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        from orchestrator.artifacts import simquant
        from orchestrator.artifacts.training import fit

        p = self.params
        block = p.block_size if p.mode == "int4" and p.block_size != INHERIT else 0
        current = simquant.mode_of(model)
        if current is not None and (current, simquant.block_of(model)) != (p.mode, block):
            raise ValueError(f"model is already fake-quantized as {current} (block {simquant.block_of(model)}), "
                             f"not {p.mode} (block {block})")
        total = sum(t.numel() for t in model.parameters())
        quantized = simquant.apply(model, p.mode, block)
        if p.epochs:
            fit(ctx.task, model, p.epochs, p.lr, p.batch_size, seed=ctx.seed)
            simquant.snap(model)
        return StageOutput(model.eval(), {"quantized_params": float(quantized),
                                          "quantized_params_frac": quantized / max(total, 1),
                                          "fakequant_block": float(simquant.block_of(model))})
