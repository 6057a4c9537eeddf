"""`distill`: logit knowledge distillation from the baseline teacher into the incoming (student) model.

A fake-quantized student (quantize earlier in the chain) trains through its quantization (STE): that is
quantization-aware distillation; its weights are stored on the grid afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import check_range
from orchestrator.stages.base import TORCH, Stage, StageContext, StageOutput


@dataclass
class DistillParams:
    """temperature: softens both distributions; alpha: weight of the KD term (1-alpha on the labels)."""

    temperature: float = 4.0
    alpha: float = 0.7
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_range("temperature", self.temperature, 0.0, 100.0, lo_open=True)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("epochs", self.epochs, 0, 1000)
        check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("batch_size", self.batch_size, 1, 65536)


def kd_loss(student: Any, teacher: Any, labels: Any, temperature: float, alpha: float) -> Any:
    """Hinton KD: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)."""
    import torch.nn.functional as F

    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1),
                    reduction="batchmean", log_target=True) * (t * t)
    return alpha * soft + (1 - alpha) * F.cross_entropy(student, labels)


class Distill(Stage):
    """Train the student on a mix of the teacher's softened logits and the true labels."""

    name = "distill"
    version = "2"
    consumes = TORCH
    produces = TORCH
    Params = DistillParams

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        import torch

        from orchestrator.stages import simquant
        from orchestrator.training import fit

        p = self.params
        teacher = ctx.teacher().eval()

        def loss(logits: Any, labels: Any, inputs: Any) -> Any:
            with torch.no_grad():
                target = ctx.task.forward(teacher, inputs)
            return kd_loss(logits, target, labels, p.temperature, p.alpha)

        fit(ctx.task, model, p.epochs, p.lr, p.batch_size, loss_fn=loss, seed=ctx.seed)
        simquant.snap(model)  # QAT/QAD: store the weights the model computes with
        return StageOutput(model.eval())
