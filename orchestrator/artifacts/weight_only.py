"""Weight-only low-bit quantization (MatMulNBits / GatherBlockQuantized) with ONNX Runtime's own algorithms.

`rtn` rounds each block of weights to the nearest level of its own min/max scale. `k_quant` searches each
block's scale and offset for the least squared error (as llama.cpp's k-quants); `hqq` (Half-Quadratic
Quantization, needs torch) optimizes scale and offset against a sparsity-promoting loss; both need no data.
`gptq` quantizes column by column and corrects the columns not yet quantized with second-order
statistics of the layer's inputs, so it reads calibration feeds. The three non-RTN algorithms handle
MatMul only: embedding tables (Gather) are then quantized with RTN in a second pass.

`quantize_file` is the whole file-to-file step the `quantize` stage runs (Gemm rewritten to MatMul, a tied
head untied, int lookups left alone); nodes named in `exclude` stay as they are (accuracy control keeps
sensitive layers at a higher precision that way).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ALGORITHMS = ["rtn", "k_quant", "hqq", "gptq"]


def _feed_reader(feeds: list[dict[str, Any]]) -> Any:
    """An ONNX Runtime CalibrationDataReader over a list of input feeds (GPTQ iterates a deep copy of it)."""
    from onnxruntime.quantization import CalibrationDataReader

    class FeedReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds, self.it = feeds, iter(feeds)

        def get_next(self) -> dict | None:
            return next(self.it, None)

        def rewind(self) -> None:
            self.it = iter(self.feeds)

    return FeedReader()


def _name_nodes(proto: Any) -> None:
    """Give unnamed nodes a name: the k_quant / GPTQ quantizers configure (and skip) nodes by name."""
    for i, node in enumerate(proto.graph.node):
        node.name = node.name or f"{node.op_type.lower()}_{i}"


def _algo_config(algorithm: str, bits: int, block_size: int, calib: Iterable[dict[str, Any]] | None) -> Any:
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    if algorithm == "k_quant":
        return nbits.KQuantWeightOnlyQuantConfig(op_types_to_quantize=("MatMul",))
    if algorithm == "hqq":
        return nbits.HQQWeightOnlyQuantConfig(block_size=block_size, bits=bits, op_types_to_quantize=("MatMul",),
                                              quant_axes=(("MatMul", 0),))
    if algorithm == "gptq":
        if calib is None:
            raise ValueError("gptq needs calibration feeds")
        return nbits.GPTQWeightOnlyQuantConfig(calibration_data_reader=_feed_reader(list(calib)),
                                               block_size=block_size, op_types_to_quantize=("MatMul",))
    raise ValueError(f"unknown weight-only algorithm {algorithm!r}: one of {', '.join(ALGORITHMS)}")


def _save(quantizer: Any, dst: Path) -> None:
    model = quantizer.model
    model.save_model_to_file(str(dst), False)


def weight_only(proto: Any, dst: Path, *, bits: int, block_size: int, symmetric: bool, ops: tuple[str, ...],
                exclude: list[str], accuracy_level: int | None, algorithm: str = "rtn",
                calib: Iterable[dict[str, Any]] | None = None) -> None:
    """Quantize the weights of `ops` (MatMul, Gather) in `proto` to `bits` bits in blocks, with `algorithm`;
    write the model to `dst`. `exclude`: node names left alone; `calib`: input feeds (gptq only).

    hqq is asymmetric only (its offsets are float, which ORT's CPU kernel refuses at 8 bits), whatever
    `symmetric` says; gptq writes 4 bits only.
    """
    import numpy as np
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    def rtn(model: Any, only: tuple[str, ...]) -> Any:
        q = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=symmetric,
                                 op_types_to_quantize=only, quant_axes=(("MatMul", 0), ("Gather", 1)),
                                 nodes_to_exclude=exclude, accuracy_level=accuracy_level)
        with np.errstate(divide="ignore", invalid="ignore"):  # all-zero blocks: ORT maps them to 0 itself
            q.process()
        return q

    if algorithm == "rtn" or "MatMul" not in ops:
        _save(rtn(proto, ops), dst)
        return
    if algorithm == "gptq" and bits != 4:
        raise ValueError("gptq writes MatMulNBits with 4 bits only")
    _name_nodes(proto)
    q = MatMulNBitsQuantizer(proto, bits=bits, block_size=block_size, is_symmetric=symmetric,
                             nodes_to_exclude=exclude, accuracy_level=accuracy_level,
                             algo_config=_algo_config(algorithm, bits, block_size, calib))
    if algorithm == "k_quant" and bits != 4:  # its per-node template says 4 bits unless told otherwise
        q.algo_config.customized_weight_config = {n.name: {"bits": bits} for n in proto.graph.node
                                                  if n.op_type == "MatMul"}
    with contextlib.redirect_stdout(io.StringIO()), np.errstate(divide="ignore", invalid="ignore"):
        q.process()  # (k_quant and gptq print a progress bar)
    rest = tuple(op for op in ops if op != "MatMul")
    if not rest:
        _save(q, dst)
        return
    import onnx

    model = q.model.model if hasattr(q.model, "model") else q.model
    _save(rtn(onnx.ModelProto.FromString(model.SerializeToString()), rest), dst)


def quantize_file(src: Path, dst: Path, *, bits: int, block_size: int, symmetric: bool, algorithm: str = "rtn",
                  ops: tuple[str, ...] = ("MatMul", "Gather"), accuracy_level: int | None = None,
                  calib: list[dict[str, Any]] | None = None, exclude: Iterable[str] = ()) -> int:
    """Weight-only int4 / int8 of the MatMul weights and embedding tables of the model at `src`, written to
    `dst`; nodes named in `exclude` are left alone. Returns how many Gemms were rewritten to MatMul first."""
    import onnx

    from orchestrator.artifacts.qdq import gemm_to_matmul, untie_transposed

    proto = onnx.load(str(src))
    rewritten = gemm_to_matmul(proto)  # the quantizer looks at MatMul only: torch's Linear is a Gemm
    untie_transposed(proto)
    weight_only(proto, dst, bits=bits, block_size=block_size, symmetric=symmetric, ops=ops,
                exclude=[*non_table_gathers(proto), *exclude], accuracy_level=accuracy_level, algorithm=algorithm,
                calib=calib)
    return rewritten


def non_table_gathers(proto: Any) -> list[str]:
    """Names of Gather nodes that do not read a float matrix: int lookups such as a trimmed vocabulary's
    id map, which the int4 quantizer would otherwise try (and fail) to quantize. Unnamed nodes get a name."""
    from onnx import TensorProto

    tables = {i.name for i in proto.graph.initializer
              if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16) and len(i.dims) == 2}
    out = []
    for i, node in enumerate(proto.graph.node):
        if node.op_type == "Gather" and node.input[0] not in tables:
            node.name = node.name or f"gather_{i}"
            out.append(node.name)
    return out
