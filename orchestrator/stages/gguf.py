"""`gguf`: torch -> a GGUF file quantized by llama.cpp's own quantizer, the format llama.cpp and Ollama run.

The node's causal LM is written as an F16 (or F32) GGUF with its tokenizer (orchestrator.artifacts.gguf_write,
tensor layout and metadata as llama.cpp's converter writes them), then `llama_model_quantize` from the pinned
prebuilt llama.cpp turns it into `type` (orchestrator.artifacts.llamacpp). An Ollama `Modelfile` lies beside
it, so `ollama create NAME -f Modelfile` takes the node's folder as it is. The node is measured by the
`llamacpp` target (the task's perplexity protocol on the same token ids, decoding speed, memory), so its
numbers sit in the same columns as the ONNX leaves'.

It ends a chain: nothing consumes a GGUF. A fake-quantized model (an earlier `quantize` run as `fakequant`)
is written with its grid weights, then quantized again to `type`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import check_choice
from orchestrator.stages.base import RuntimeStage, StageContext, StageOutput

GGUF = "gguf"
# llama.cpp's file types we offer: F32/F16 are written directly, the rest by llama.cpp's quantizer
TYPES = ("F32", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0", "IQ4_NL")
UNWEIGHTED = ("F32", "F16", "Q8_0")  # written without searching scales: an importance matrix changes nothing
RUNTIME = "npm:@node-llama-cpp/linux-x64"  # the prebuilt llama.cpp (its version is in every gguf node's key)


@dataclass
class GGUFParams:
    """type: the llama.cpp file type of the GGUF (Ollama's default is Q4_K_M; Q8_0 keeps the float model's
    quality; F16/F32 are the unquantized conversion). K-quants work on rows in blocks of 256 and fall back to
    other types where a row is not a multiple of 256; Q4_0 / Q4_1 / Q5_0 / IQ4_NL (a non-linear 4-bit grid)
    use blocks of 32.
    imatrix: quantize with an importance matrix (each column's mean squared activation) read from the task's
    `calib` split, as `llama-imatrix` + `llama-quantize --imatrix` do: block scales are searched for the least
    error on the columns that matter instead of set by each block's largest weight. F32, F16 and Q8_0 have no
    scales to search: there it is dropped from the node (its params show it)."""

    type: str = "Q4_K_M"
    imatrix: bool = False

    def __post_init__(self) -> None:
        check_choice("type", self.type, list(TYPES))

    @property
    def weighed(self) -> bool:
        """Whether an importance matrix applies: asked for, and a type whose quantizer searches scales."""
        return self.imatrix and self.type not in UNWEIGHTED


class GGUFStage(RuntimeStage):
    """Write the incoming causal LM as GGUF and quantize it to `type` with llama.cpp's quantizer."""

    name = GGUF
    version = "1"
    produces = GGUF
    made_as = "written as GGUF"
    runtime = "llama.cpp"
    ships = "type"
    Params = GGUFParams
    libraries = ("torch", "transformers", "gguf", "numpy", RUNTIME)

    @classmethod
    def plan_params(cls, own: dict[str, Any], stages: dict[str, dict[str, Any]],
                    earlier: tuple[Any, ...], chain: str) -> dict[str, Any]:
        """`imatrix` is keyed only where it applies (true, and a type whose quantizer weighs columns): GGUFs made
        before the option keep their keys, and a sweep of types with `imatrix: true` makes one F16 / Q8_0 node."""
        weighed = GGUFParams(**own).weighed
        return {k: v for k, v in own.items() if k != "imatrix" or weighed}

    @classmethod
    def deployed_as(cls, params: dict[str, Any]) -> str:
        """`Q4_0 · llama.cpp`, or `Q4_0 imatrix · llama.cpp` where an importance matrix was applied."""
        return f"{params.get('type', GGUFParams.type)}{' imatrix' if params.get('imatrix') else ''} · {cls.runtime}"

    @classmethod
    def runtime_missing(cls) -> str | None:
        from orchestrator.artifacts.llamacpp import RuntimeMissing, lib_path

        try:
            lib_path()
        except RuntimeMissing as err:
            return str(err)
        return None

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        from orchestrator.artifacts import gguf_write, llamacpp

        model = self.float_model(model)
        tokenizer, vocab_source = ctx.task.gguf_tokenizer()
        out = ctx.work_dir / "model.gguf"
        start = time.perf_counter()
        direct = self.params.type in ("F32", "F16")
        source = out if direct else ctx.work_dir / "f16.gguf.tmp"
        gguf_write.write(model, tokenizer, source, "F32" if self.params.type == "F32" else "F16",
                         tokenizer_source=vocab_source)
        written = time.perf_counter()
        metrics: dict[str, float] = {}
        if not direct:
            matrix = self._imatrix(ctx, model) if self.params.weighed else None
            metrics = llamacpp.quantize(source, out, self.params.type, os.cpu_count() or 1,  # threads: same bytes
                                        imatrix=matrix)
            metrics.pop("seconds", None)
            source.unlink()
            if matrix is not None:
                matrix.unlink()
        gguf_write.modelfile(ctx.work_dir, out.name, getattr(tokenizer, "chat_template", None))
        params = sum(p.numel() for p in model.parameters())
        return StageOutput(out, {**metrics, "gguf_write_seconds": written - start,
                                 "gguf_quantize_seconds": time.perf_counter() - written,
                                 "gguf_bits_per_weight": out.stat().st_size * 8 / max(params, 1)})

    @staticmethod
    def _imatrix(ctx: StageContext, model: Any) -> Any:
        """The importance matrix of `model`'s Linears on the task's whole `calib` split, saved for the child."""
        from orchestrator.artifacts import gguf_write, imatrix

        start = time.perf_counter()
        task = ctx.task
        matrix = imatrix.collect(gguf_write.matmul_weights(model), model, (x for x, _ in task.batches("calib", 4)),
                                 task.forward)
        ctx.log(f"gguf: importance matrix of {len(matrix)} tensors from the calib split in "
                f"{time.perf_counter() - start:.1f} s")
        return imatrix.save(matrix, ctx.work_dir / "imatrix.npz")
