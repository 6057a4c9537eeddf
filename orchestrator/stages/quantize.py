"""`quantize`: ONNX Runtime quantization of an ONNX model, for deployment.

Modes: int8 dynamic (weights int8, activations quantized at run time); int8 static (QDQ format, activation
ranges calibrated on N samples with minmax / entropy / percentile); fp16; int4 weight-only (MatMulNBits
for MatMul, GatherBlockQuantized for embedding tables, blocks of `block_size`; Gemm is rewritten to
MatMul first, since the int4 quantizer skips Gemm and Conv).

Written before a torch stage (`quantize>prune`), the planner runs the torch twin `fakequant` instead.
Every run reports what was really quantized (`quantized_params`, `quantized_params_frac`,
`quantized_tensors`), so a mode that finds nothing to quantize shows 0 instead of passing silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError, check_choice, check_range
from orchestrator.stages.base import ONNX, Earlier, Stage, StageContext, StageOutput

MODES = ["int8", "fp16", "int4", "q4f16", "int8_weight", "int4_int8"]
METHODS = ["dynamic", "static"]
CALIBRATIONS = ["minmax", "entropy", "percentile"]
ALGORITHMS = ["rtn", "k_quant", "hqq", "gptq"]  # = artifacts.weight_only.ALGORITHMS (planning imports no ORT)
_USED = {"fp16": ["mode"], "int4": ["mode", "block_size", "symmetric"],
         "int8_weight": ["mode", "block_size", "symmetric"], "q4f16": ["mode", "block_size", "symmetric"],
         "int4_int8": ["mode", "block_size", "symmetric", "per_channel", "int4_matmul", "accuracy_level"],
         "dynamic": ["mode", "method", "per_channel", "symmetric"],
         "static": ["mode", "method", "per_channel", "symmetric", "activations", "calibration", "calib_samples"],
         "percentile": ["mode", "method", "per_channel", "symmetric", "activations", "calibration", "calib_samples",
                        "percentile"]}
ACTIVATIONS = ["uint8", "int8"]


_NBITS = ("int4", "q4f16", "int8_weight", "int4_int8")
_CONTROLLED = ("int4", "int8_weight", "int8")  # modes whose groups accuracy control can raise


def _kind(p: dict[str, Any]) -> str:
    """Which group of params applies: fp16, int4, dynamic, static or static with percentile calibration."""
    if p["mode"] != "int8":
        return p["mode"]
    if p["method"] == "static" and p["calibration"] == "percentile":
        return "percentile"
    return p["method"]


@dataclass
class QuantizeParams:
    """mode: int8 | fp16 | int4. The rest refine a mode and are ignored by the others:

    int8: method dynamic | static; per_channel weight scales; symmetric weights. static: activations uint8
    (asymmetric: the U8S8 kernels x86 CPUs run fast) or int8 (symmetric S8S8, what ARM CPUs prefer: on x86,
    ONNX Runtime fuses few of its MatMuls and the model runs slower than float); calibration minmax | entropy |
    percentile over calib_samples samples of the task's `calib` split (percentile: the kept percentile).
    int4: block_size (a power of two >= 16) elements share a scale; symmetric as above.
    q4f16: int4 weights as above and everything else in fp16 (what transformers.js ships as `q4f16`).
    int8_weight: weight-only int8 (MatMulNBits with 8 bits, blocks as for int4): activations stay float,
    unlike int8 dynamic, which quantizes them at run time (on LMs that costs much more perplexity).
    int4_int8: int4 where it pays for size and int8 for the rest. Embedding tables (Gather) are int4
    (GatherBlockQuantized); MatMul weights are int4 too when `int4_matmul` (MatMulNBits; accuracy_level 4
    computes them on int8-quantized activations, 0 in float), else int8 dynamic (MatMulInteger); any
    weight MatMul left in float after that is int8 dynamic. Every quantize run reports per operator family
    which precision its weight-reading nodes got (`ops_int4_matmul`, `ops_int8_matmul`, `ops_int4_gather`...).
    A MatMul on a transposed shared weight (an LM head tied to the embeddings) gets its own copy first,
    so int4 / int8 quantize the head too instead of skipping it.
    algorithm (the MatMulNBits modes: int4, q4f16, int8_weight, int4_int8's int4 MatMul): rtn | k_quant |
    hqq | gptq (see artifacts.weight_only); gptq calibrates on calib_samples samples of the `calib` split.
    Runs report `quant_algorithm` (its index in ALGORITHMS) and `quant_seconds`.
    sensitivity / max_loss (modes int4, int8_weight, int8; see stages.accuracy_control): the loss each group
    of weights causes, on val_samples examples of the task's validation split, logged as a table; max_loss
    (the task's own loss: accuracy points as a fraction, a perplexity ratio; null or 0 = off) raises the most
    sensitive groups (int4 -> int8 -> float) until the validation loss against the float parent is within it.
    """

    mode: str = "int8"
    method: str = "dynamic"
    calibration: str = "minmax"
    calib_samples: int = 256
    percentile: float = 99.999
    per_channel: bool = False
    symmetric: bool = True
    activations: str = "uint8"
    block_size: int = 32
    int4_matmul: bool = True
    accuracy_level: int = 4
    algorithm: str = "rtn"
    sensitivity: bool = False
    max_loss: float | None = None
    val_samples: int = 512

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        check_choice("method", self.method, METHODS)
        check_choice("calibration", self.calibration, CALIBRATIONS)
        check_choice("activations", self.activations, ACTIVATIONS)
        check_range("calib_samples", self.calib_samples, 1, 100000)
        check_range("percentile", self.percentile, 50.0, 100.0)
        check_range("block_size", self.block_size, 16, 4096)
        check_choice("accuracy_level", self.accuracy_level, [0, 1, 2, 3, 4])
        check_choice("algorithm", self.algorithm, ALGORITHMS)
        if self.algorithm in ("gptq", "hqq") and self.mode == "int8_weight":  # gptq: 4 bits; hqq: float offsets
            raise ConfigError("algorithm", self.algorithm, "has no 8-bit MatMulNBits that ONNX Runtime's CPU kernel "
                              "runs: use rtn or k_quant with int8_weight")
        check_range("val_samples", self.val_samples, 1, 1000000)
        if self.max_loss is not None:
            check_range("max_loss", self.max_loss, 0)
        if (self.sensitivity or self.max_loss) and self.mode not in _CONTROLLED:
            raise ConfigError("max_loss" if self.max_loss else "sensitivity", self.max_loss or self.sensitivity,
                              f"applies to modes {', '.join(_CONTROLLED)}, not {self.mode}")
        if self.block_size & (self.block_size - 1):
            raise ConfigError("block_size", self.block_size, "must be a power of two >= 16 (16, 32, 64, 128, ...)")


class Quantize(Stage):
    """Quantize an ONNX model and report how much of it was actually quantized."""

    name = "quantize"
    version = "3"  # 3: static int8 rounds only what integer kernels read (ort_int8.static_int8)
    consumes = ONNX
    produces = ONNX
    Params = QuantizeParams
    libraries = ("onnx", "onnxruntime")
    torch_twin = "fakequant"

    @classmethod
    def plan_params(cls, own: dict[str, Any], stages: dict[str, dict[str, Any]],
                    earlier: tuple[Earlier, ...], chain: str) -> dict[str, Any]:
        """Only the params the chosen mode uses, so that e.g. a sweep over calibration methods does not
        make three identical dynamic-int8 nodes (and the logged params show what really applied)."""
        full = {**asdict(QuantizeParams()), **own}
        used = _USED[_kind(full)]
        nbits = full["mode"] in _NBITS and (full["mode"] != "int4_int8" or full["int4_matmul"])
        if nbits and full["algorithm"] != "rtn":  # rtn stays unkeyed: existing keys hold
            used = [*used, "algorithm", *(["calib_samples"] if full["algorithm"] == "gptq" else [])]
        if full["sensitivity"] or full["max_loss"]:  # off stays unkeyed: existing keys hold
            used = [*used, "sensitivity", *(["max_loss"] if full["max_loss"] else []), "val_samples"]
        return {k: full[k] for k in used}

    @classmethod
    def check_task(cls, params: QuantizeParams, task_cls: type) -> None:
        """Static calibration feeds plain examples; an LM's KV-cache graph takes more inputs than those."""
        from orchestrator.tasks.capabilities import KVCache, supports

        if params.mode == "int8" and params.method == "static" and supports(task_cls, KVCache):
            raise ConfigError("stages.quantize.method", "static", f"task {task_cls.name!r} is a language model: "
                              "use int8 dynamic, int8_weight, int4, q4f16 or fp16")
        if params.mode in _NBITS and params.algorithm == "gptq" and supports(task_cls, KVCache):
            raise ConfigError("stages.quantize.algorithm", "gptq", f"task {task_cls.name!r} is a language model "
                              "(its KV-cache graph takes more than the calibration examples): use rtn, k_quant or hqq")
        quality = task_cls.quality if params.max_loss else None  # max_loss is said in the task's own loss
        if quality is not None and quality.loss == "ratio" and params.max_loss < 1.0:
            raise ConfigError("stages.quantize.max_loss", params.max_loss, f"is a ratio of {quality.metric} to the "
                              "float parent's: must be >= 1 (1.1 = 10% worse)")

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        import logging
        import time

        from orchestrator.artifacts.onnx_utils import kernels_after_optimization, precision_by_op, quantization_report
        from orchestrator.artifacts.ort_int8 import dynamic_int8, to_fp16

        # ORT logs a "consider pre-processing" hint at WARNING on every call; it is not actionable here.
        logging.getLogger().setLevel(logging.ERROR)
        logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)  # per node
        p, src, out = self.params, Path(model), ctx.work_dir / "model.onnx"
        metrics: dict[str, float] = {}
        start = time.perf_counter()
        if p.sensitivity or p.max_loss:
            metrics.update(_controlled(ctx, src, out, p))
        elif p.mode == "fp16":
            to_fp16(src, out)
        elif p.mode in ("int4", "int8_weight"):
            bits = 4 if p.mode == "int4" else 8
            metrics["gemm_rewritten"] = float(_int4(src, out, p, bits, calib=_calib_feeds(ctx, p)))
        elif p.mode == "q4f16":
            int4 = ctx.work_dir / "int4.onnx.tmp"
            metrics["gemm_rewritten"] = float(_int4(src, int4, p, calib=_calib_feeds(ctx, p)))
            to_fp16(int4, out)
            int4.unlink()
        elif p.mode == "int4_int8":
            metrics["gemm_rewritten"] = float(_int4_int8(src, out, p, ctx))
        elif p.method == "static":
            metrics["calib_samples"] = float(_static_int8(ctx, src, out, p))
        else:
            dynamic_int8(src, out, p.per_channel, p.symmetric, ctx.work_dir)
        metrics["quant_seconds"] = time.perf_counter() - start
        if p.mode in _NBITS:
            metrics["quant_algorithm"] = float(ALGORITHMS.index(p.algorithm))
        return StageOutput(out, {**metrics, **quantization_report(src, out), **precision_by_op(out),
                                 **kernels_after_optimization(out)})


def _controlled(ctx: StageContext, src: Path, out: Path, p: QuantizeParams) -> dict[str, float]:
    """The mode's quantization built group by group, for the sensitivity table and accuracy control."""
    from orchestrator.artifacts.mixed_precision import Mixed, Options
    from orchestrator.artifacts.ort_int8 import Calibration
    from orchestrator.stages import accuracy_control

    kind = p.method if p.mode == "int8" else p.mode
    static = ({"calibration": p.calibration, "percentile": p.percentile, "activations": p.activations}
              if kind == "static" else {})
    reader = Calibration(ctx.task, p.calib_samples) if kind == "static" else None
    mixed = Mixed(src, ctx.work_dir, Options(kind, p.block_size, p.symmetric, p.per_channel, p.algorithm,
                                             calib_feeds=_calib_feeds(ctx, p), static=static, reader=reader))
    try:
        metrics = accuracy_control.run(ctx.task, src, out, mixed, samples=p.val_samples, sensitivity=p.sensitivity,
                                       max_loss=p.max_loss, log=ctx.log)
    finally:
        mixed.close()
    return {**metrics, "gemm_rewritten": float(mixed.gemm_rewritten), **({"calib_samples": float(reader.count)}
                                                                          if reader else {})}


def _static_int8(ctx: StageContext, src: Path, dst: Path, p: QuantizeParams) -> int:
    """QDQ static int8 on `calib_samples` examples of the `calib` split; returns the samples used."""
    from orchestrator.artifacts.ort_int8 import Calibration, static_int8, static_prepared

    prepped = ctx.work_dir / "preprocessed.onnx.tmp"
    static_prepared(src, prepped)
    used = static_int8(Calibration(ctx.task, p.calib_samples), prepped, dst, calibration=p.calibration,
                       per_channel=p.per_channel, symmetric=p.symmetric, percentile=p.percentile,
                       activations=p.activations)
    prepped.unlink()
    return used


def _calib_feeds(ctx: StageContext, p: QuantizeParams) -> list[dict[str, Any]] | None:
    """GPTQ's calibration inputs: the first calib_samples examples of the `calib` (train) split, never test."""
    if p.algorithm != "gptq":
        return None
    from itertools import islice

    return [feeds for feeds, _ in islice(ctx.task.onnx_batches("calib", 1), p.calib_samples)]


def _int4_int8(src: Path, dst: Path, p: QuantizeParams, ctx: StageContext) -> int:
    """Embedding tables int4; MatMul weights int4 (`int4_matmul`) or int8 dynamic; returns Gemms rewritten."""
    import shutil

    from orchestrator.artifacts.onnx_utils import precision_by_op
    from orchestrator.artifacts.ort_int8 import dynamic_int8

    work = ctx.work_dir
    mid = work / "int4.onnx.tmp"
    if p.int4_matmul:
        rewritten = _int4(src, mid, p, accuracy_level=p.accuracy_level, calib=_calib_feeds(ctx, p))
        if precision_by_op(mid).get("ops_float_matmul"):  # weights the int4 quantizer skipped: int8 then
            dynamic_int8(mid, dst, p.per_channel, p.symmetric, work, ops=["MatMul"])
        else:
            shutil.copyfile(mid, dst)
    else:
        rewritten = dynamic_int8(src, mid, p.per_channel, p.symmetric, work, ops=["MatMul"], rewrite_gemm=True)
        _int4(mid, dst, p, ops=("Gather",))
    mid.unlink()
    return rewritten


def _int4(src: Path, dst: Path, p: QuantizeParams, bits: int = 4, ops: tuple[str, ...] = ("MatMul", "Gather"),
          accuracy_level: int | None = None, calib: list[dict[str, Any]] | None = None) -> int:
    """Weight-only int4 / int8 of MatMul weights and embedding tables (p.algorithm); returns Gemms rewritten."""
    from orchestrator.artifacts.weight_only import quantize_file

    return quantize_file(src, dst, bits=bits, block_size=p.block_size, symmetric=p.symmetric, ops=ops,
                         accuracy_level=accuracy_level, algorithm=p.algorithm, calib=calib)
