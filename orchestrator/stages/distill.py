"""`distill`: logit knowledge distillation from the baseline teacher into the incoming (student) model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import ConfigError, check_range
from orchestrator.stages.base import TORCH, Stage, StageContext, StageOutput


@dataclass
class DistillParams:
    """temperature: softens both distributions; alpha: weight of the KD term (1-alpha on the labels).

    shrink: keep every k-th layer of the student before KD (DistilBERT-style init; 1 = keep all).
    hidden_weight: weight of an MSE between student and teacher hidden states (0 = logits only).
    """

    temperature: float = 4.0
    alpha: float = 0.7
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    shrink: int = 1
    hidden_weight: float = 0.0

    def __post_init__(self) -> None:
        check_range("temperature", self.temperature, 0.0, 100.0, lo_open=True)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("epochs", self.epochs, 0, 1000)
        check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("batch_size", self.batch_size, 1, 65536)
        check_range("shrink", self.shrink, 1, 64)
        check_range("hidden_weight", self.hidden_weight, 0.0, 1e4)


def hidden_loss(student: list, teacher: list) -> Any:
    """Mean MSE between each student hidden state and the teacher's at the same relative depth."""
    import torch.nn.functional as F

    s_layers, t_layers = len(student) - 1, len(teacher) - 1
    pairs = [(h, teacher[round(i * t_layers / max(s_layers, 1))]) for i, h in enumerate(student)]
    return sum(F.mse_loss(s, t) for s, t in pairs) / len(pairs)


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
    version = "1"
    consumes = TORCH
    produces = TORCH
    Params = DistillParams

    @classmethod
    def check_task(cls, params: DistillParams, task_cls: type) -> None:
        """shrink and hidden_weight need task hooks that only layered (transformer) tasks implement."""
        from orchestrator.tasks.base import Task

        if params.shrink > 1 and task_cls.shrink is Task.shrink:
            raise ConfigError("stages.distill.shrink", params.shrink,
                              f"task {task_cls.name!r} cannot drop layers; use 1 (or a Hugging Face task)")
        if params.hidden_weight > 0 and task_cls.hidden_states is Task.hidden_states:
            raise ConfigError("stages.distill.hidden_weight", params.hidden_weight,
                              f"task {task_cls.name!r} exposes no hidden states; use 0 (or a Hugging Face task)")

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        import torch

        from orchestrator.training import fit

        p = self.params
        if p.shrink > 1:
            model = ctx.task.shrink(model, p.shrink)
        teacher = ctx.teacher().eval()

        def loss(logits: Any, labels: Any, inputs: Any) -> Any:
            with torch.no_grad():
                target = ctx.task.forward(teacher, inputs)
                hidden = ctx.task.hidden_states(teacher, inputs) if p.hidden_weight else None
            total = kd_loss(logits, target, labels, p.temperature, p.alpha)
            if hidden is not None:  # a second student pass: the loop's forward returns logits only
                total = total + p.hidden_weight * hidden_loss(ctx.task.hidden_states(model, inputs), hidden)
            return total

        fit(ctx.task, model, p.epochs, p.lr, p.batch_size, loss_fn=loss, seed=ctx.seed)
        return StageOutput(model.eval())
