"""Unstructured magnitude pruning helpers, and measurements that show what pruning really did.

Zeroed weights are held at zero by masks (torch.nn.utils.prune) while the prune stage fine-tunes, and
the masks are folded into the weights before the model leaves the stage. Dense files do not shrink
when weights become zero, so `gzip_mb` reports the compressed size, which does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.utils.prune as tprune
from torch import nn


def prunable(model: nn.Module, protected: list) -> list[nn.Module]:
    """Conv2d/Linear modules (fake-quantized ones included) not protected by the task."""
    keep = {id(m) for m in protected}
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in keep]


def _smallest(magnitudes: torch.Tensor, ratio: float) -> torch.Tensor:
    """Boolean mask (True = keep) zeroing the round(ratio * n) smallest entries."""
    k = int(round(ratio * magnitudes.numel()))
    keep = torch.ones(magnitudes.numel(), dtype=torch.bool)
    if k:
        keep[torch.argsort(magnitudes.flatten(), stable=True)[:k]] = False
    return keep.view_as(magnitudes)


def _masked(module: nn.Module) -> bool:
    """Whether `module` itself (not a child) carries a pruning mask on its weight."""
    return hasattr(module, "weight_mask")


def mask_smallest(modules: list[nn.Module], ratio: float, global_ranking: bool) -> None:
    """Zero the `ratio` smallest-magnitude weights (across all modules, or within each) behind masks."""
    for m in modules:
        if _masked(m):  # an earlier iterative step: fold its mask, rank again from there
            tprune.remove(m, "weight")
    magnitudes = [m.weight.detach().abs() for m in modules]
    if global_ranking:
        flat = _smallest(torch.cat([w.flatten() for w in magnitudes]), ratio)
        masks = list(torch.split(flat, [w.numel() for w in magnitudes]))
        masks = [mask.view_as(w) for mask, w in zip(masks, magnitudes, strict=True)]
    else:
        masks = [_smallest(w, ratio) for w in magnitudes]
    for m, mask in zip(modules, masks, strict=True):
        tprune.custom_from_mask(m, "weight", mask)


def fold_masks(model: nn.Module) -> None:
    """Make every mask permanent: plain weights with zeros, no pruning hooks left on the model."""
    for m in model.modules():
        if _masked(m):
            tprune.remove(m, "weight")


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over all Conv2d/Linear weight tensors of the model."""
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / total) if total else 0.0


def gzip_mb(task: Any, model: nn.Module, opset: int = 17) -> float:
    """Megabytes of the model's ONNX export after gzip (zeros compress; a dense file does not shrink)."""
    from orchestrator.artifacts.onnx_utils import gzip_size_bytes

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        task.export(model, path, opset, "torchscript")
        return gzip_size_bytes(path, level=6) / 1e6
