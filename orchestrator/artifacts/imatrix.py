"""Importance matrices for llama.cpp's quantizer: computed in torch on calibration text, applied by ggml.

llama.cpp's quantizers take, per tensor, one weight per input column (its `imatrix`): the mean of the squared
activations that column multiplies. With it, each block's scale is searched for the least importance-weighted
error instead of being set by the block's largest value (Q4_0, Q4_1, Q5_0, IQ4_NL, the K-quants; Q8_0 ignores
it). llama.cpp collects it with its `llama-imatrix` tool and passes it to `llama_model_quantize` as a C++ map,
which a C caller cannot build. So `collect` computes the same statistic here, on the task's calibration
windows, and `apply` (run in the llama.cpp child) re-quantizes every tensor of a freshly quantized GGUF that
has an entry with `ggml_quantize_chunk`, the very function `llama_model_quantize` calls per tensor with the
map's entry: same type per tensor as llama.cpp chose, same bytes as llama.cpp would write given that matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

UNUSED = ("F32", "F16", "BF16", "Q8_0")  # GGML types whose quantizer has no use for an importance matrix


def collect(linears: dict[str, Any], model: Any, batches: Iterable[Any],
            forward: Callable[[Any, Any], Any]) -> dict[str, np.ndarray]:
    """Mean squared input per column of each of `linears` (name -> nn.Linear of `model`) over all `batches`."""
    import torch

    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def keep(_module: Any, args: tuple) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            sums[name] = sums.get(name, 0) + x.square().sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return keep

    handles = [lin.register_forward_pre_hook(hook(name)) for name, lin in linears.items()]
    try:
        with torch.no_grad():
            for inputs in batches:
                forward(model, inputs)
    finally:
        for h in handles:
            h.remove()
    missing = sorted(set(linears) - set(sums))
    if missing:
        raise ValueError(f"no calibration activations reached {', '.join(missing[:3])}")
    return {name: (sums[name] / counts[name]).float().numpy() for name in linears}


def save(matrix: dict[str, np.ndarray], path: Path) -> Path:
    """Write `matrix` as an .npz (what `apply` reads in the child process)."""
    np.savez(path, **matrix)
    return Path(path)


def apply(lib: Any, src: Path, dst: Path, matrix_path: Path) -> dict[str, float]:
    """Re-quantize, in place, each quantized tensor of `dst` that `matrix_path` has an entry for, from its
    float original in `src` (the GGUF `dst` was quantized from), with `ggml_quantize_chunk` and the entry.

    Returns `imatrix_tensors` (re-quantized) and `imatrix_skipped` (quantized tensors without an entry or of a
    type that ignores it, such as a Q8_0 head). Raises ValueError when an entry's length is not the tensor's
    row length or ggml writes a different number of bytes than the tensor holds."""
    import gguf

    matrix = np.load(matrix_path)
    source = {t.name: t for t in gguf.GGUFReader(str(src)).tensors}
    out = gguf.GGUFReader(str(dst), "r+")
    done = skipped = 0
    for t in out.tensors:
        kind = gguf.GGMLQuantizationType(t.tensor_type).name
        if kind in ("F32", "F16", "BF16"):
            continue
        if kind in UNUSED or t.name not in matrix.files:
            skipped += 1
            continue
        rows_in = np.ascontiguousarray(source[t.name].data, dtype=np.float32)
        per_row = int(t.shape[0])  # GGUF shapes are innermost first
        rows = rows_in.size // per_row
        weights = np.ascontiguousarray(matrix[t.name], dtype=np.float32)
        if weights.shape != (per_row,):
            raise ValueError(f"importance of {t.name}: {weights.shape[0]} values for rows of {per_row}")
        buf = np.empty(int(t.n_bytes), np.uint8)
        wrote = lib.ggml_quantize_chunk(int(t.tensor_type), rows_in.ctypes.data, buf.ctypes.data, 0, rows, per_row,
                                        weights.ctypes.data)
        if wrote != t.n_bytes:
            raise ValueError(f"{t.name}: ggml wrote {wrote} bytes where the {kind} tensor holds {t.n_bytes}")
        t.data.reshape(-1).view(np.uint8)[:] = buf
        done += 1
    out.data.flush()
    return {"imatrix_tensors": float(done), "imatrix_skipped": float(skipped)}
