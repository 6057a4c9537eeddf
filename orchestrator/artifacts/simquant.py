"""Simulated (fake) weight quantization in torch, kept by every later torch stage.

`nn.Conv2d` / `nn.Linear` modules are switched in place to subclasses whose forward uses the weight
rounded to the quantization grid, with a straight-through estimator (STE) for the gradient. Because
they stay Conv2d/Linear subclasses, pruning still finds and shrinks them, the grid follows the pruned
weight (scales are recomputed from it), and any later training is quantization-aware.

Grids (the final quantizer's, so an export is lossless):
- int8 / int4 per output channel (`block` 0): symmetric, scale = max|w| / qmax (qmax 127 / 7; 1 for an
  all-zero channel), q = round(w / scale) in [-qmax, qmax]; stored by `qdq.weight_only_qdq`;
- int4 / int8 in blocks of `block` inputs (Linear weights only; Conv2d stays per channel): `block_grid`,
  ONNX Runtime's MatMulNBits rounding, the grid `quantize` mode int4 ends on; stored by that quantizer;
- fp16: the weight rounded to half precision.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MODES = ["int8", "int4", "fp16"]
QMAX = {"int8": 127, "int4": 7}


def grid(weight: torch.Tensor, mode: str, block: int = 0) -> torch.Tensor:
    """`weight` rounded to the `mode` grid: per output channel (dim 0), or in blocks of `block` inputs of a 2-d
    weight (`block_grid`, symmetric)."""
    if mode == "fp16":
        return weight.half().float()
    if block and weight.dim() == 2:
        return block_grid(weight, 8 if mode == "int8" else 4, block, symmetric=True)
    qmax = QMAX[mode]
    absmax = weight.abs().flatten(1).amax(1) if weight.dim() > 1 else weight.abs().amax().reshape(1)
    scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
    scale = scale.view(-1, *([1] * (weight.dim() - 1)))
    return torch.clamp(torch.round(weight / scale), -qmax, qmax) * scale


def blocks(weight: torch.Tensor, block: int) -> torch.Tensor:
    """`weight` (out, in) as (out, ceil(in / block), block): each row cut in blocks of inputs, the last one
    padded with zeros."""
    return F.pad(weight, (0, (-weight.shape[1]) % block)).reshape(weight.shape[0], -1, block)


def block_grid(weight: torch.Tensor, bits: int, block: int, symmetric: bool = True) -> torch.Tensor:
    """`weight` (out, in) rounded in blocks of `block` inputs per row, as the weight-only quantizers round it.

    Symmetric: d = (the block's largest-magnitude value, signed) / -2^(bits-1), q = round(w / d) clamped to
    [-2^(bits-1), 2^(bits-1) - 1]; exactly ONNX Runtime's MatMulNBits RTN (is_symmetric) and llama.cpp's Q4_0 /
    Q8_0 (a test checks it against ONNX Runtime). Asymmetric: llama.cpp Q4_1's min/max grid, d = (max - min) /
    (2^bits - 1), q = round((w - min) / d). A last partial block is padded with zeros for its scale.
    """
    out_f, in_f = weight.shape
    w = blocks(weight, block)
    if symmetric:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        signed_max = torch.gather(w, -1, w.abs().argmax(-1, keepdim=True))
        d = signed_max / lo
        d = torch.where(d == 0, torch.ones_like(d), d)
        q = torch.clamp(torch.round(w / d), lo, hi) * d
    else:
        low = w.amin(-1, keepdim=True)
        d = (w.amax(-1, keepdim=True) - low) / (2 ** bits - 1)
        d = torch.where(d == 0, torch.ones_like(d), d)
        q = torch.clamp(torch.round((w - low) / d), 0, 2 ** bits - 1) * d + low
    return q.reshape(out_f, -1)[:, :in_f]


def ste(weight: torch.Tensor, mode: str, block: int = 0) -> torch.Tensor:
    """Forward: the grid value; backward: identity (the straight-through estimator)."""
    return weight + (grid(weight.detach(), mode, block) - weight).detach()


class FakeQuantConv2d(nn.Conv2d):
    """A Conv2d computing with its weight on the `fq_mode` grid."""

    fq_mode: str
    fq_block: int = 0  # always per channel: blocks are the MatMul quantizers' grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, ste(self.weight, self.fq_mode), self.bias)


class FakeQuantLinear(nn.Linear):
    """A Linear computing with its weight on the `fq_mode` grid."""

    fq_mode: str
    fq_block: int = 0  # 0: per output channel (models saved before blocks existed load as that)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, ste(self.weight, self.fq_mode, self.fq_block), self.bias)


SWAP = {nn.Conv2d: FakeQuantConv2d, nn.Linear: FakeQuantLinear}
PLAIN = {fq: base for base, fq in SWAP.items()}


def apply(model: nn.Module, mode: str, block: int = 0) -> int:
    """Switch every plain Conv2d/Linear of `model` to fake quantization and snap its weight to the grid
    (Linear weights in blocks of `block` inputs when `block`; Conv2d per channel).

    Returns the number of weight elements now simulated in `mode`.
    """
    count = 0
    for module in model.modules():
        cls = SWAP.get(type(module)) or (type(module) if type(module) in PLAIN else None)
        if cls is None:
            continue
        module.__class__, module.fq_mode = cls, mode
        if cls is FakeQuantLinear:
            module.fq_block = block
        with torch.no_grad():
            module.weight.copy_(grid(module.weight, mode, module.fq_block))
        count += module.weight.numel()
    return count


def block_of(model: nn.Module) -> int:
    """The block size of `model`'s fake-quantized Linears (0: per output channel, or none)."""
    blocks = {m.fq_block for m in model.modules() if type(m) is FakeQuantLinear}
    if len(blocks) > 1:
        raise ValueError(f"model mixes fake-quantization blocks {sorted(blocks)}")
    return blocks.pop() if blocks else 0


def mode_of(model: nn.Module) -> str | None:
    """The fake-quantization mode of `model`, or None for a plain model."""
    modes = {m.fq_mode for m in model.modules() if type(m) in PLAIN}
    if len(modes) > 1:
        raise ValueError(f"model mixes fake-quantization modes {sorted(modes)}")
    return modes.pop() if modes else None


@contextlib.contextmanager
def plain_classes(model: nn.Module) -> Iterator[str | None]:
    """Temporarily show fake-quantized modules as plain Conv2d/Linear (for tools that match exact types,
    e.g. torch-pruning's MAC counter); yields the mode. Weights are left as they are."""
    swapped = [m for m in model.modules() if type(m) in PLAIN]
    mode = mode_of(model)
    for m in swapped:
        m.__class__ = PLAIN[type(m)]
    try:
        yield mode
    finally:
        for m in swapped:
            m.__class__ = SWAP[type(m)]


def lower(model: nn.Module) -> tuple[nn.Module, str | None]:
    """A plain copy of `model` whose weights are the grid values it computes with, and the mode."""
    mode = mode_of(model)
    plain = copy.deepcopy(model)
    with torch.no_grad():
        for m in plain.modules():
            if type(m) in PLAIN:
                m.weight.copy_(grid(m.weight, m.fq_mode, m.fq_block))
                m.__class__ = PLAIN[type(m)]
                del m.fq_mode
                m.__dict__.pop("fq_block", None)
    return plain, mode


def off_grid(model: nn.Module) -> float:
    """Largest |w - grid(w)| over the fake-quantized weights (0 when every stored weight is on its grid)."""
    worst = 0.0
    with torch.no_grad():
        for m in model.modules():
            if type(m) in PLAIN:
                worst = max(worst, float((m.weight - grid(m.weight, m.fq_mode, m.fq_block)).abs().max()))
    return worst


def snap(model: Any) -> None:
    """Store every fake-quantized weight as its grid value (what the model computes with anyway)."""
    with torch.no_grad():
        for m in model.modules():
            if type(m) in PLAIN:
                m.weight.copy_(grid(m.weight, m.fq_mode, m.fq_block))
