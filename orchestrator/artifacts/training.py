"""One training loop shared by the baseline, fine-tuning after pruning and distillation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from orchestrator import faults


def fit(task: Any, model: torch.nn.Module, epochs: int, lr: float, batch_size: int,
        loss_fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor] | None = None,
        seed: int = 0, log: Callable[[str], None] | None = None,
        extra_params: list[torch.nn.Parameter] | None = None, tokens: int = 0,
        split: str = "train", forward: Callable[[Any, Any], torch.Tensor] | None = None) -> torch.nn.Module:
    """Train `model` in place on the task's `split` (default train) with Adam; `loss_fn(logits, labels, inputs)`.

    The default loss is cross-entropy. Seeded so that a node's artifact is reproducible.
    `extra_params` are trained too (e.g. a projection a loss uses that is not part of the model).
    `forward(model, inputs)` replaces `task.forward` (e.g. one that also keeps the hidden states for the loss).
    `tokens` > 0 is a budget in labels (next tokens for a language model) instead of `epochs`: passes over
    the data repeat until that many labels have been trained on, stopping mid-pass when it is reached.
    A known budget gets the usual LM schedule: linear warm-up over the first 5%, then cosine decay to 10%.
    """
    torch.manual_seed(seed)
    loss_fn = loss_fn or (lambda logits, labels, _inputs: torch.nn.functional.cross_entropy(logits, labels))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad] + list(extra_params or []), lr=lr)
    model.train()
    seen, epoch = 0, 0
    while (seen < tokens) if tokens else (epoch < epochs):
        total, n = 0.0, 0
        for inputs, labels in task.batches(split, batch_size, shuffle=True):
            if tokens:
                for group in opt.param_groups:
                    group["lr"] = lr * budget_schedule((seen + n) / tokens)
            opt.zero_grad()
            loss = loss_fn((forward or task.forward)(model, inputs), labels, inputs)
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(labels), n + len(labels)
            if tokens and seen + n >= tokens:
                break
        seen, epoch = seen + n, epoch + 1
        faults.point("train_epoch")
        if log:
            done = f"{seen}/{tokens} tokens" if tokens else f"epoch {epoch}/{epochs}"
            log(f"{done} loss {total / max(n, 1):.4f}")
    return model.eval()


def budget_schedule(progress: float) -> float:
    """The learning-rate factor at `progress` (0..1) of a token budget: warm-up, then cosine to 0.1."""
    import math

    if progress < 0.05:
        return (progress + 1e-3) / 0.05
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (progress - 0.05) / 0.95)))


@torch.no_grad()
def torch_accuracy(task: Any, model: torch.nn.Module, split: str = "test", batch_size: int = 256) -> float:
    """Top-1 accuracy of a torch model on `split` (used by stages; nodes are scored on ONNX)."""
    model.eval()
    hits, n = 0, 0
    for inputs, labels in task.batches(split, batch_size):
        hits += int((task.forward(model, inputs).argmax(-1) == labels).sum())
        n += len(labels)
    return hits / max(n, 1)
