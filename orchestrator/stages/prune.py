"""`prune`: structured (torch-pruning: channels/neurons, transformer heads + FFN through the task's hooks)
or unstructured magnitude pruning, one-shot or iterative, optionally fine-tuned.

Measured, not assumed: params and MACs before/after, `sparsity` (fraction of zero Conv/Linear weights)
and `model_size_gzip_mb` (dense files do not shrink when weights become zero; compressed ones do).
A fake-quantized model (quantize earlier in the chain) stays fake-quantized: the grid follows the pruned
weights and the fine-tuning is quantization-aware.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import ConfigError, check_choice, check_range
from orchestrator.stages.base import TORCH, Stage, StageContext, StageOutput

IMPORTANCES = ["l1", "l2", "taylor", "random", "activation", "mix"]
OWN_IMPORTANCES = ("activation", "mix")  # only tasks with their own structured pruning (LMs) rank these
METHODS = ["structured", "unstructured"]


@dataclass
class PruneParams:
    """method: structured (remove channels/neurons) or unstructured (zero single weights by magnitude).

    ratio: structured: fraction of channels removed per prunable layer (params fall ~1-(1-ratio)^2);
    unstructured: fraction of Conv/Linear weights zeroed. importance (structured): how channels are
    ranked. global_pruning: rank across layers instead of within each. iterative_steps: reach `ratio`
    in N equal steps, the fine-tuning split between them. finetune_epochs: cross-entropy epochs in total.

    Language models (task lm / tinylm / smollm2): `ratio` of every layer's FFN neurons go, ranked by
    importance l1 (weights), activation (mean |activation| on calibration text) or mix (0.5 each, as
    in the P-KD-Q paper); `heads` of the KV heads go with their query groups. finetune_tokens: a
    fine-tuning budget in next-token labels instead of epochs (for any task: labels = examples).
    multiple_of (structured): kept channels / neurons per layer rounded down to a multiple of it, so block
    quantizers fit the pruned rows (32 for int4 blocks and GGUF's Q4_0 / Q8_0, 256 for its K-quants).
    """

    method: str = "structured"
    ratio: float = 0.5
    importance: str = "l1"
    global_pruning: bool = False
    iterative_steps: int = 1
    finetune_epochs: int = 0
    lr: float = 1e-3
    batch_size: int = 64
    heads: float = 0.0
    finetune_tokens: int = 0
    multiple_of: int = 1

    def __post_init__(self) -> None:
        check_range("heads", self.heads, 0.0, 1.0, hi_open=True)
        check_range("multiple_of", self.multiple_of, 1, 4096)
        check_range("finetune_tokens", self.finetune_tokens, 0, 10**12)
        check_choice("method", self.method, METHODS)
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


def epochs_per_step(total: int, steps: int) -> list[int]:
    """`total` fine-tuning epochs split over `steps` (the remainder goes to the last steps)."""
    return [total // steps + (1 if i >= steps - total % steps else 0) for i in range(steps)]


class Prune(Stage):
    """Remove (structured) or zero (unstructured) the least important weights; the classifier keeps its outputs."""

    name = "prune"
    version = "2"
    consumes = TORCH
    produces = TORCH
    Params = PruneParams
    libraries = ("torch", "torch-pruning")

    @classmethod
    def plan_params(cls, own: dict[str, Any], stages: dict[str, dict[str, Any]], earlier: tuple, chain: str
                    ) -> dict[str, Any]:
        """`multiple_of: 1` (no rounding) is left out of the key, so nodes made before it existed keep theirs."""
        return {k: v for k, v in own.items() if not (k == "multiple_of" and v == 1)}

    @classmethod
    def check_task(cls, params: PruneParams, task_cls: type) -> None:
        """activation / mix importance and `heads` need a task with its own structured pruning (LMs)."""
        from orchestrator.tasks.capabilities import StructuredPruning, require, supports

        if params.importance in OWN_IMPORTANCES:  # they rank LM FFN neurons
            require(task_cls, StructuredPruning, "stages.prune.importance", params.importance,
                    "use l1, l2, taylor or random")
        if params.heads:  # LM KV groups (other tasks prune heads with `ratio`)
            require(task_cls, StructuredPruning, "stages.prune.heads", params.heads, "use 0")
        own = supports(task_cls, StructuredPruning)
        if own and params.method == "structured" and params.importance not in ("l1", *OWN_IMPORTANCES):
            raise ConfigError("stages.prune.importance", params.importance,
                              f"task {task_cls.name!r} ranks FFN neurons by l1, activation or mix")
        if own and params.global_pruning:
            raise ConfigError("stages.prune.global_pruning", True, f"task {task_cls.name!r} prunes every layer "
                              "alike (one config for all layers); use false")

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        import torch

        from orchestrator.artifacts import simquant
        from orchestrator.stages import sparsity
        from orchestrator.tasks.capabilities import StructuredPruning, supports

        torch.manual_seed(ctx.seed)
        if supports(type(ctx.task), StructuredPruning) and self.params.method == "structured":
            return self._own(ctx, model)
        macs0, params0 = self._count(ctx, model)
        if self.params.method == "structured":
            model = self._structured(ctx, model)
        else:
            self._unstructured(ctx, model)
        simquant.snap(model)  # a fake-quantized model leaves with its stored weights on its grid
        macs1, params1 = self._count(ctx, model)
        return StageOutput(model.eval(), {
            "params_before": params0, "params_after": params1, "macs_before": macs0, "macs_after": macs1,
            "sparsity": sparsity.sparsity(model),
            "model_size_gzip_mb": sparsity.gzip_mb(ctx.task, simquant.lower(model)[0])})

    def _own(self, ctx: StageContext, model: Any) -> StageOutput:
        """The task's own structured pruning (LMs: FFN neurons and KV groups), in steps, each fine-tuned."""
        from orchestrator.artifacts import simquant

        p, before = self.params, float(sum(t.numel() for t in model.parameters()))
        metrics: dict[str, float] = {}
        steps = p.iterative_steps
        for step, epochs in enumerate(epochs_per_step(p.finetune_epochs, steps), start=1):
            # each step removes what takes the layer from the last step's width to this step's target
            ratio = 1 - (1 - p.ratio * step / steps) / (1 - p.ratio * (step - 1) / steps)
            heads = 1 - (1 - p.heads * step / steps) / (1 - p.heads * (step - 1) / steps)
            metrics = ctx.task.prune_structured(model, ratio, p.importance, heads, p.multiple_of)
            self._finetune(ctx, model, epochs, p.finetune_tokens // steps)
        simquant.snap(model)
        after = float(sum(t.numel() for t in model.parameters()))
        return StageOutput(model.eval(), {**metrics, "params_before": before, "params_after": after})

    @staticmethod
    def _count(ctx: StageContext, model: Any) -> tuple[float, float]:
        """(MACs, params) as torch-pruning counts them (it matches exact module types, hence plain_classes)."""
        import torch_pruning as tp

        from orchestrator.artifacts import simquant

        with simquant.plain_classes(model):
            macs, params = tp.utils.count_ops_and_params(model, ctx.task.example_inputs())
        return float(macs), float(params)

    def _structured(self, ctx: StageContext, model: Any) -> Any:
        import torch_pruning as tp

        from orchestrator.artifacts import simquant

        p = self.params
        with simquant.plain_classes(model):
            example = ctx.task.example_inputs()
            pruner = tp.pruner.MetaPruner(
                model, example, importance=_importance(p.importance), pruning_ratio=p.ratio,
                global_pruning=p.global_pruning, iterative_steps=p.iterative_steps,
                ignored_layers=ctx.task.protected_modules(model), round_to=p.multiple_of if p.multiple_of > 1 else None,
                **ctx.task.pruning_kwargs(model, p.ratio))
        for epochs in epochs_per_step(p.finetune_epochs, p.iterative_steps):
            if p.importance == "taylor":
                self._taylor_grads(ctx, model)
            with simquant.plain_classes(model):
                pruner.step()
            model = ctx.task.after_prune(model)
            self._finetune(ctx, model, epochs, p.finetune_tokens // p.iterative_steps)
        return model

    def _unstructured(self, ctx: StageContext, model: Any) -> None:
        from orchestrator.stages import sparsity

        p = self.params
        modules = sparsity.prunable(model, ctx.task.protected_modules(model))
        for step, epochs in enumerate(epochs_per_step(p.finetune_epochs, p.iterative_steps), start=1):
            sparsity.mask_smallest(modules, p.ratio * step / p.iterative_steps, p.global_pruning)
            self._finetune(ctx, model, epochs, p.finetune_tokens // p.iterative_steps)
        sparsity.fold_masks(model)

    def _finetune(self, ctx: StageContext, model: Any, epochs: int, tokens: int = 0) -> None:
        if epochs or tokens:
            from orchestrator.artifacts.training import fit

            fit(ctx.task, model, epochs, self.params.lr, self.params.batch_size, seed=ctx.seed, tokens=tokens)

    @staticmethod
    def _taylor_grads(ctx: StageContext, model: Any) -> None:
        """Taylor importance ranks by |w * dL/dw|: accumulate gradients on one training batch."""
        import torch

        model.zero_grad()
        inputs, labels = next(ctx.task.batches("train", 256, shuffle=True))
        torch.nn.functional.cross_entropy(ctx.task.forward(model, inputs), labels).backward()
