"""`awq`: activation-aware weight scaling, torch -> torch, before a weight-only low-bit quantizer.

The model it returns computes what its input computed (the scales are folded into the norms and Linears
that feed the rescaled weights; see orchestrator.artifacts.awq), but its weights round to a low-bit grid with
less output error. So it goes right before the step that quantizes: `[awq, quantize]` (int4 MatMulNBits),
`[prune, distill, awq, gguf]` (llama.cpp Q4_0 / IQ4_NL / ...), `[awq, genai]`. It reads the task's `calib`
split (training windows, never validation or test).

The search rounds on `bits`-bit blocks of `block_size`, symmetric or not: set them to the grid of the quantizer
that follows (the defaults are `quantize` int4's and llama.cpp Q4_0's grid; Q4_1 is asymmetric, block 32).
Reported: `awq_error_ratio` (the quantized output error on the calibration tokens after the search / plain
rounding; < 1 is the gain it expects), `awq_alpha_mean`, `awq_clipped_frac`, `awq_seconds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import ConfigError, check_choice, check_range
from orchestrator.stages.base import TORCH, Earlier, Stage, StageContext, StageOutput


@dataclass
class AWQParams:
    """bits / block_size / symmetric: the grid the next quantizer rounds to. steps: exponents tried (alpha =
    i / steps) and clipping ranges (1 - i / steps, down to half). clip: also clip each block to the range that
    rounds with the least output error on `bits`/`block_size` (the float model then changes a little; it helped
    llama.cpp Q4_0 on SmolLM2 and hurt IQ4_NL, whose grid is not that one: see the README).
    tokens: calibration tokens whose activations the search reads (the first ones of the calib split)."""

    bits: int = 4
    block_size: int = 32
    symmetric: bool = True
    steps: int = 20
    clip: bool = False
    tokens: int = 2048

    def __post_init__(self) -> None:
        check_choice("bits", self.bits, [3, 4, 8])
        check_range("block_size", self.block_size, 8, 4096)
        if self.block_size & (self.block_size - 1):
            raise ConfigError("block_size", self.block_size, "must be a power of two >= 8 (16, 32, 64, 128, ...)")
        check_range("steps", self.steps, 2, 200)
        check_range("tokens", self.tokens, 16, 10**7)


class AWQ(Stage):
    """Rescale input channels by their activations (and clip blocks) so the next low-bit quantizer loses less."""

    name = "awq"
    version = "1"
    consumes = TORCH
    produces = TORCH
    Params = AWQParams
    libraries = ("torch", "transformers")

    @classmethod
    def plan_params(cls, own: dict[str, Any], stages: dict[str, dict[str, Any]],
                    earlier: tuple[Earlier, ...], chain: str) -> dict[str, Any]:
        """Refuse a chain that quantized earlier: rescaling moves fake-quantized weights off their grid."""
        if any(e.stage == "fakequant" for e in earlier):
            raise ConfigError("pipeline", chain, "awq rescales float weights: put it after every quantize "
                              "that runs in torch, right before the step that quantizes for good")
        return own

    @classmethod
    def check_task(cls, params: Any, task_cls: type) -> None:
        from orchestrator.tasks.capabilities import Rescalable, require

        require(task_cls, Rescalable, "pipeline", cls.name)

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        from orchestrator.artifacts import awq

        p, task = self.params, ctx.task
        metrics = awq.apply(model, task.scale_groups(model), (x for x, _ in task.batches("calib", 4)),
                            task.forward, bits=p.bits, block=p.block_size, symmetric=p.symmetric, steps=p.steps,
                            clip=p.clip, tokens=p.tokens, log=lambda _: None)
        ctx.log(f"awq: {int(metrics['awq_groups'])} groups, quantized output error x{metrics['awq_error_ratio']:.3f}"
                f" of plain rounding on {int(metrics['awq_tokens'])} calibration tokens, "
                f"{metrics['awq_clipped_frac']:.1%} of blocks clipped, {metrics['awq_seconds']:.1f} s")
        return StageOutput(model.eval(), metrics)
