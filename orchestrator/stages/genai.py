"""`genai`: torch -> an ONNX Runtime GenAI model folder, built by onnxruntime-genai's own model builder (what
Olive builds LLMs for), measured in ONNX Runtime GenAI.

The node's causal LM is saved as a save_pretrained folder and handed to the builder
(orchestrator.artifacts.genai) at `precision`: fp32, fp16, int8 or int4 weight-only (MatMulNBits) with the
builder's `algorithm` (`rtn`, `k_quant`) and `block_size`; `symmetric: false` stores a zero point per block
(SmolLM2: 20.4 -> 16.7 perplexity at int4 rtn), and `lm_head: int8` keeps the last MatMul (the tied LM head,
where most of the int4 loss lies) at 8 bits. The node's folder is the GenAI folder (model.onnx + its data,
genai_config.json, tokenizer files), which `og.Model(folder)` loads as it is; the `genai` target measures it
on the task's test windows and token ids, so its numbers sit in the same columns as the other leaves'.

It ends a chain: nothing consumes a GenAI folder. A fake-quantized model (an earlier `quantize` run as
`fakequant`) is built from its grid weights.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError, check_choice
from orchestrator.stages.base import RuntimeStage, StageContext, StageOutput

GENAI = "genai"
PRECISIONS = ("fp32", "fp16", "int8", "int4")  # as orchestrator.artifacts.genai.PRECISIONS (a test keeps them equal)
ALGORITHMS = ("rtn", "k_quant")
BLOCK_SIZES = (16, 32, 64, 128, 256)


@dataclass
class GenAIParams:
    """precision: fp32, fp16, int8 or int4 (weight-only, blocks of `block_size`, by `algorithm`: rtn or k_quant);
    symmetric: false adds a zero point per block; lm_head: 'int8' keeps the LM head at 8 bits ('' = as the rest)."""

    precision: str = "int4"
    algorithm: str = "k_quant"
    block_size: int = 32
    symmetric: bool = True
    lm_head: str = ""

    def __post_init__(self) -> None:
        check_choice("precision", self.precision, list(PRECISIONS))
        check_choice("algorithm", self.algorithm, list(ALGORITHMS))
        check_choice("block_size", self.block_size, list(BLOCK_SIZES))
        check_choice("lm_head", self.lm_head, ["", "int8"])
        if not isinstance(self.symmetric, bool):
            raise ConfigError("symmetric", self.symmetric, "true or false")


class GenAIStage(RuntimeStage):
    """Build the incoming causal LM as an ONNX Runtime GenAI folder at `precision`."""

    name = GENAI
    version = "1"
    produces = GENAI
    made_as = "built for ONNX Runtime GenAI"
    runtime = "ONNX Runtime GenAI"
    ships = "precision"
    Params = GenAIParams
    libraries = ("torch", "transformers", "onnxruntime-genai", "onnxruntime", "onnx")

    @classmethod
    def plan_params(cls, own: dict[str, Any], stages: dict[str, dict[str, Any]], earlier: tuple, chain: str
                    ) -> dict[str, Any]:
        if own.get("precision", "int4") in ("fp32", "fp16"):  # the quantizer's settings change nothing there
            return {"precision": own.get("precision")}
        return own

    @classmethod
    def runtime_missing(cls) -> str | None:
        from orchestrator.artifacts import genai

        try:
            genai.check_installed()
        except genai.RuntimeMissing as err:
            return str(err)
        return None

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        from orchestrator.artifacts import genai

        model = self.float_model(model)
        p = self.params
        if p.precision in ("int4", "int8"):
            _check_blocks(model, p.block_size)
        extra = {"is_symmetric": "false"} if not p.symmetric else {}
        if p.lm_head:
            extra["matmul_mixed_precision"] = f"last_matmul:{p.lm_head}"
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="genai-hf-") as hf:
            ctx.task.save_hf(model, Path(hf))
            genai.build(Path(hf), ctx.work_dir, p.precision, p.algorithm, p.block_size,
                        threads=os.cpu_count() or 1, extra_options=extra)
        return StageOutput(ctx.work_dir / "genai_config.json", {"genai_build_seconds": time.perf_counter() - start})


def _check_blocks(model: Any, block: int) -> None:
    """Refuse, in one line, a model the builder's weight-only quantizer would crash on: ONNX Runtime 1.32 packs
    the zero points of a weight whose input width holds an odd number of blocks into the wrong shape (a
    pruned FFN of 1,056 = 33 x 32 fails; 1,024 works)."""
    from torch import nn

    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (module.in_features // block) % 2:
            raise ConfigError("stages.genai.block_size", block,
                              f"{name} reads {module.in_features} inputs, an odd number of blocks of {block}, which "
                              "ONNX Runtime's int4 packing mishandles; prune to a multiple of "
                              f"{2 * block} (stages.prune.multiple_of={2 * block}) or pick another block_size")
