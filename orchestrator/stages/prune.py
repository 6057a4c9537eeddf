"""`prune`: structured channel/neuron pruning with torch-pruning, optionally fine-tuned afterwards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import check_choice, check_range
from orchestrator.stages.base import TORCH, Stage, StageContext, StageOutput

IMPORTANCES = ["l1", "l2", "taylor", "random"]


@dataclass
class PruneParams:
    """ratio: fraction of channels removed per prunable layer (params fall ~1-(1-ratio)^2).

    importance: how channels are ranked; global_pruning: rank across layers instead of within each;
    iterative_steps: reach `ratio` in N equal steps; finetune_epochs: cross-entropy epochs afterwards.
    """

    ratio: float = 0.5
    importance: str = "l1"
    global_pruning: bool = False
    iterative_steps: int = 1
    finetune_epochs: int = 0
    lr: float = 1e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_range("ratio", self.ratio, 0.0, 1.0, hi_open=True)
        check_choice("importance", self.importance, IMPORTANCES)
        check_range("iterative_steps", self.iterative_steps, 1, 100)
        check_range("finetune_epochs", self.finetune_epochs, 0, 1000)
        check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("batch_size", self.batch_size, 1, 65536)


def _importance(name: str) -> Any:
    import torch_pruning as tp

    return {"l1": lambda: tp.importance.MagnitudeImportance(p=1),
            "l2": lambda: tp.importance.MagnitudeImportance(p=2),
            "taylor": tp.importance.TaylorImportance,
            "random": tp.importance.RandomImportance}[name]()


class Prune(Stage):
    """Remove the least important channels/neurons; the classifier head keeps its outputs."""

    name = "prune"
    version = "1"
    consumes = TORCH
    produces = TORCH
    Params = PruneParams

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        import torch
        import torch_pruning as tp

        p = self.params
        torch.manual_seed(ctx.seed)
        example = ctx.task.example_inputs()
        macs0, params0 = tp.utils.count_ops_and_params(model, example)
        pruner = tp.pruner.MetaPruner(
            model, example, importance=_importance(p.importance), pruning_ratio=p.ratio,
            global_pruning=p.global_pruning, iterative_steps=p.iterative_steps,
            ignored_layers=ctx.task.protected_modules(model), **ctx.task.pruning_kwargs(model, p.ratio))
        for _ in range(p.iterative_steps):
            if p.importance == "taylor":
                self._taylor_grads(ctx, model)
            pruner.step()
        model = ctx.task.after_prune(model)
        if p.finetune_epochs:
            from orchestrator.training import fit

            fit(ctx.task, model, p.finetune_epochs, p.lr, p.batch_size, seed=ctx.seed)
        macs1, params1 = tp.utils.count_ops_and_params(model, example)
        return StageOutput(model.eval(), {"params_before": params0, "params_after": params1,
                                          "macs_before": macs0, "macs_after": macs1})

    @staticmethod
    def _taylor_grads(ctx: StageContext, model: Any) -> None:
        """Taylor importance ranks by |w * dL/dw|: accumulate gradients on one training batch."""
        import torch

        model.zero_grad()
        inputs, labels = next(ctx.task.batches("train", 256, shuffle=True))
        torch.nn.functional.cross_entropy(ctx.task.forward(model, inputs), labels).backward()
