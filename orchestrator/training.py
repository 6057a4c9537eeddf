"""One training loop shared by the baseline, fine-tuning after pruning and distillation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from orchestrator import faults


def fit(task: Any, model: torch.nn.Module, epochs: int, lr: float, batch_size: int,
        loss_fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor] | None = None,
        seed: int = 0, log: Callable[[str], None] | None = None,
        extra_params: list[torch.nn.Parameter] | None = None) -> torch.nn.Module:
    """Train `model` in place on the task's train split with Adam; `loss_fn(logits, labels, inputs)`.

    The default loss is cross-entropy. Seeded so that a node's artifact is reproducible.
    `extra_params` are trained too (e.g. a projection a loss uses that is not part of the model).
    """
    torch.manual_seed(seed)
    loss_fn = loss_fn or (lambda logits, labels, _inputs: torch.nn.functional.cross_entropy(logits, labels))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad] + list(extra_params or []), lr=lr)
    model.train()
    for epoch in range(epochs):
        total, n = 0.0, 0
        for inputs, labels in task.batches("train", batch_size, shuffle=True):
            opt.zero_grad()
            loss = loss_fn(task.forward(model, inputs), labels, inputs)
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(labels), n + len(labels)
        faults.point("train_epoch")
        if log:
            log(f"epoch {epoch + 1}/{epochs} loss {total / max(n, 1):.4f}")
    return model.eval()


@torch.no_grad()
def torch_accuracy(task: Any, model: torch.nn.Module, split: str = "test", batch_size: int = 256) -> float:
    """Top-1 accuracy of a torch model on `split` (used by stages; nodes are scored on ONNX)."""
    model.eval()
    hits, n = 0, 0
    for inputs, labels in task.batches(split, batch_size):
        hits += int((task.forward(model, inputs).argmax(-1) == labels).sum())
        n += len(labels)
    return hits / max(n, 1)
