"""Simulated (fake) weight quantization in torch, kept by every later torch stage.

`nn.Conv2d` / `nn.Linear` modules are switched in place to subclasses whose forward uses the weight
rounded to the quantization grid, with a straight-through estimator (STE) for the gradient. Because
they stay Conv2d/Linear subclasses, pruning still finds and shrinks them, the grid follows the pruned
weight (scales are recomputed from it), and any later training is quantization-aware.

Grids (shared with `qdq.weight_only_qdq`, so an export is lossless):
- int8 / int4: symmetric, one scale per output channel, scale = max|w| / qmax (qmax 127 / 7; 1 for an
  all-zero channel), q = round(w / scale) in [-qmax, qmax];
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


def grid(weight: torch.Tensor, mode: str) -> torch.Tensor:
    """`weight` rounded to the `mode` grid (per output channel = dim 0)."""
    if mode == "fp16":
        return weight.half().float()
    qmax = QMAX[mode]
    absmax = weight.abs().flatten(1).amax(1) if weight.dim() > 1 else weight.abs().amax().reshape(1)
    scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
    scale = scale.view(-1, *([1] * (weight.dim() - 1)))
    return torch.clamp(torch.round(weight / scale), -qmax, qmax) * scale


def ste(weight: torch.Tensor, mode: str) -> torch.Tensor:
    """Forward: the grid value; backward: identity (the straight-through estimator)."""
    return weight + (grid(weight.detach(), mode) - weight).detach()


class FakeQuantConv2d(nn.Conv2d):
    """A Conv2d computing with its weight on the `fq_mode` grid."""

    fq_mode: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, ste(self.weight, self.fq_mode), self.bias)


class FakeQuantLinear(nn.Linear):
    """A Linear computing with its weight on the `fq_mode` grid."""

    fq_mode: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, ste(self.weight, self.fq_mode), self.bias)


SWAP = {nn.Conv2d: FakeQuantConv2d, nn.Linear: FakeQuantLinear}
PLAIN = {fq: base for base, fq in SWAP.items()}


def apply(model: nn.Module, mode: str) -> int:
    """Switch every plain Conv2d/Linear of `model` to fake quantization and snap its weight to the grid.

    Returns the number of weight elements now simulated in `mode`.
    """
    count = 0
    for module in model.modules():
        cls = SWAP.get(type(module)) or (type(module) if type(module) in PLAIN else None)
        if cls is None:
            continue
        module.__class__, module.fq_mode = cls, mode
        with torch.no_grad():
            module.weight.copy_(grid(module.weight, mode))
        count += module.weight.numel()
    return count


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
                m.weight.copy_(grid(m.weight, m.fq_mode))
                m.__class__ = PLAIN[type(m)]
                del m.fq_mode
    return plain, mode


def off_grid(model: nn.Module) -> float:
    """Largest |w - grid(w)| over the fake-quantized weights (0 when every stored weight is on its grid)."""
    worst = 0.0
    with torch.no_grad():
        for m in model.modules():
            if type(m) in PLAIN:
                worst = max(worst, float((m.weight - grid(m.weight, m.fq_mode)).abs().max()))
    return worst


def snap(model: Any) -> None:
    """Store every fake-quantized weight as its grid value (what the model computes with anyway)."""
    with torch.no_grad():
        for m in model.modules():
            if type(m) in PLAIN:
                m.weight.copy_(grid(m.weight, m.fq_mode))
