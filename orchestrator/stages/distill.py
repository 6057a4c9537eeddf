"""`distill`: knowledge distillation into the incoming (student) model.

Logit KD (softened teacher logits + labels), optionally plus a hidden-state loss: for layered
(transformer) tasks, every student layer's hidden state is matched to the teacher's at the same relative
depth; otherwise the student's input to its classifier head is projected to the teacher's and matched by
MSE (FitNets; the projection is trained with the student and then dropped). `shrink` first builds a
smaller student by keeping every k-th layer (DistilBERT-style). The teacher is the baseline, or any
earlier step of the chain by the name written in the recipe (`teacher: prune` = the model right after
pruning); the planner checks that it exists. A fake-quantized student trains through its quantization:
QAT, or QAD with a teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import ConfigError, check_range
from orchestrator.stages.base import TORCH, Earlier, Stage, StageContext, StageOutput

BASELINE = "baseline"


@dataclass
class DistillParams:
    """temperature: softens both distributions; alpha: weight of the KD term (1-alpha on the labels).

    teacher: `baseline` or the name of an earlier torch step of the chain (e.g. `prune`; the nearest one).
    shrink: keep every k-th layer of the student before KD (DistilBERT-style init; 1 = keep all; layered
    tasks only). keep_layers: keep this many layers instead, spread evenly and always the last (2 of 6
    keeps layers 2 and 5; 0 = use shrink). transfer: also train on this many unlabelled texts of the task's
    data (the train split's texts beyond task.train_size; they get the KD terms only, the teacher labels
    them: a transfer set, what small students need most). hidden_weight: weight of the hidden-state MSE
    loss (0: logits only).
    tokens: a training budget in labels instead of `epochs` (next tokens for a language model: KD over
    the vocabulary on that many positions; 0 = use epochs).
    """

    temperature: float = 4.0
    alpha: float = 0.7
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    teacher: str = BASELINE
    shrink: int = 1
    hidden_weight: float = 0.0
    tokens: int = 0
    keep_layers: int = 0
    transfer: int = 0

    def __post_init__(self) -> None:
        check_range("tokens", self.tokens, 0, 10**12)
        check_range("temperature", self.temperature, 0.0, 100.0, lo_open=True)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("epochs", self.epochs, 0, 1000)
        check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("batch_size", self.batch_size, 1, 65536)
        check_range("shrink", self.shrink, 1, 64)
        check_range("hidden_weight", self.hidden_weight, 0.0, 1000.0)
        check_range("keep_layers", self.keep_layers, 0, 1024)
        check_range("transfer", self.transfer, 0, 10**9)
        if self.keep_layers and self.shrink > 1:
            raise ConfigError("keep_layers", self.keep_layers, f"set either shrink (now {self.shrink}) or "
                              "keep_layers, not both")


def hidden_loss(student: list, teacher: list) -> Any:
    """Mean MSE between each student hidden state and the teacher's at the same relative depth."""
    import torch.nn.functional as F

    s_layers, t_layers = len(student) - 1, len(teacher) - 1
    pairs = [(h, teacher[round(i * t_layers / max(s_layers, 1))]) for i, h in enumerate(student)]
    return sum(F.mse_loss(s, t) for s, t in pairs) / len(pairs)


def _layered(task_cls: type) -> bool:
    """Layered (transformer) tasks expose per-layer hidden states; others get the head-input loss."""
    from orchestrator.tasks.capabilities import Layered, supports

    return supports(task_cls, Layered)


def kd_loss(student: Any, teacher: Any, labels: Any, temperature: float, alpha: float) -> Any:
    """Hinton KD: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels).

    Unlabelled examples (label -1, a transfer set) add only the KD term.
    """
    import torch.nn.functional as F

    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1),
                    reduction="batchmean", log_target=True) * (t * t)
    labelled = labels >= 0
    if bool(labelled.all()):
        return alpha * soft + (1 - alpha) * F.cross_entropy(student, labels)
    if not bool(labelled.any()):
        return soft
    return alpha * soft + (1 - alpha) * F.cross_entropy(student[labelled], labels[labelled])


class _HeadInput:
    """Records the input of a model's classifier head on every forward (the hidden state to match)."""

    def __init__(self, task: Any, model: Any) -> None:
        heads = task.protected_modules(model)
        if not heads:
            raise ValueError("distill.hidden_weight > 0 needs the task to name its classifier head "
                             "(Task.protected_modules); this task names none")
        self.value: Any = None
        self.handle = heads[-1].register_forward_pre_hook(self._keep)

    def _keep(self, _module: Any, args: tuple) -> None:
        self.value = args[0]


class Distill(Stage):
    """Train the student on the teacher's softened logits, the true labels and optionally its hidden state."""

    name = "distill"
    version = "3"  # 3: hidden-state KD takes the student's states from the training pass (one pass, not two)
    consumes = TORCH
    produces = TORCH
    Params = DistillParams
    libraries = ("torch",)

    @classmethod
    def plan_params(cls, own: dict[str, Any], stages: dict[str, dict[str, Any]],
                    earlier: tuple[Earlier, ...], chain: str) -> dict[str, Any]:
        """Refuse a teacher that is not the baseline or an earlier torch step of this chain."""
        names = [e.written for e in earlier if e.produces == TORCH]
        if own.get("teacher", BASELINE) not in (BASELINE, *names):
            raise ConfigError("stages.distill.teacher", own["teacher"], "must be baseline or a torch step "
                              f"before distill in {chain}: " + ", ".join([BASELINE, *names]))
        # unset: keyed as before these options existed, so caches stay valid
        own = {k: v for k, v in own.items() if k not in ("keep_layers", "transfer") or v}
        return own

    @classmethod
    def check_task(cls, params: DistillParams, task_cls: type) -> None:
        """transfer needs unlabelled data, shrink / keep_layers a layered model: refused before any compute."""
        from orchestrator.tasks.capabilities import Layered, TransferData, require

        if params.transfer:
            require(task_cls, TransferData, "stages.distill.transfer", params.transfer, "use 0")
        for key in ("shrink", "keep_layers"):
            if getattr(params, key) > (1 if key == "shrink" else 0):
                require(task_cls, Layered, f"stages.distill.{key}", getattr(params, key), "leave it unset")

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        import torch

        from orchestrator.artifacts import simquant
        from orchestrator.artifacts.training import fit

        p = self.params
        if p.keep_layers:
            model = ctx.task.shrink(model, 1, count=p.keep_layers)
        elif p.shrink > 1:
            model = ctx.task.shrink(model, p.shrink)
        teacher = (ctx.teacher() if p.teacher == BASELINE else ctx.load(p.teacher)).eval()
        layered = p.hidden_weight > 0 and _layered(type(ctx.task))
        hidden = _HiddenLoss(ctx.task, model, teacher) if p.hidden_weight and not layered else None

        kept: list = []  # the student's hidden states of the pass the training loop just made

        def forward(student: Any, inputs: Any) -> Any:
            logits, states = ctx.task.forward_with_states(student, inputs)
            kept[:] = [states]
            return logits

        def loss(logits: Any, labels: Any, inputs: Any) -> Any:
            with torch.no_grad():
                if layered:  # one teacher pass gives both
                    target, t_states = ctx.task.forward_with_states(teacher, inputs)
                else:
                    target = ctx.task.forward(teacher, inputs)
            total = kd_loss(logits, target, labels, p.temperature, p.alpha)
            if layered:
                return total + p.hidden_weight * hidden_loss(kept[0], t_states)
            return total + p.hidden_weight * hidden.loss() if hidden else total

        fit(ctx.task, model, p.epochs, p.lr, p.batch_size, loss_fn=loss, seed=ctx.seed,
            extra_params=list(hidden.proj.parameters()) if hidden else None, tokens=p.tokens,
            split=ctx.task.transfer_split(p.transfer) if p.transfer else "train", forward=forward if layered else None)
        if hidden:
            hidden.close()
        simquant.snap(model)  # QAT/QAD: store the weights the model computes with
        metrics = {"hidden_loss": hidden.last} if hidden else {}
        return StageOutput(model.eval(), metrics)


class _HiddenLoss:
    """MSE between the student's head input (projected) and the teacher's, on the same batch."""

    def __init__(self, task: Any, student: Any, teacher: Any) -> None:
        import torch

        self.student, self.teacher = _HeadInput(task, student), _HeadInput(task, teacher)
        inputs, _ = next(task.batches("train", 2))
        with torch.no_grad():  # one forward each, to learn both widths
            task.forward(student, inputs)
            task.forward(teacher, inputs)
        d_s, d_t = self.student.value.shape[-1], self.teacher.value.shape[-1]
        self.proj = torch.nn.Linear(d_s, d_t, bias=False) if d_s != d_t else torch.nn.Identity()
        self.last = 0.0

    def loss(self) -> Any:
        import torch.nn.functional as F

        value = F.mse_loss(self.proj(self.student.value), self.teacher.value.detach())
        self.last = float(value.detach())
        return value

    def close(self) -> None:
        self.student.handle.remove()
        self.teacher.handle.remove()
