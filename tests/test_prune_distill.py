"""Pruning (structured and unstructured), distillation teachers and the hidden-state loss, on real training."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from orchestrator.stages import REGISTRY, StageContext
from orchestrator.stages.prune import epochs_per_step


def run(name: str, model: Any, task: Any, folder: Path, teacher: Any = None, load: Any = None, **params: Any) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    cls = REGISTRY[name]
    ctx = StageContext(task=task, work_dir=folder, seed=0, teacher=lambda: copy.deepcopy(teacher),
                       **({"load": load} if load else {}))
    return cls(cls.Params(**params)).run(ctx, model)


@pytest.mark.parametrize("global_pruning", [False, True])
def test_unstructured_half_is_half_sparse_and_only_the_gzip_size_shrinks(global_pruning: bool, digits: Any,
                                                                         baseline: Any, tmp_path: Path) -> None:
    dense = run("prune", copy.deepcopy(baseline), digits, tmp_path / "d", method="unstructured", ratio=0.01)
    out = run("prune", copy.deepcopy(baseline), digits, tmp_path / "s", method="unstructured", ratio=0.5,
              global_pruning=global_pruning, iterative_steps=2, finetune_epochs=2)
    # the classifier head is protected: 1280 of 151072 Conv/Linear weights stay dense
    assert out.metrics["sparsity"] == pytest.approx(0.5 * (151072 - 1280) / 151072, abs=1e-3)
    assert out.metrics["params_after"] == out.metrics["params_before"]  # dense tensors, same count
    assert out.metrics["model_size_gzip_mb"] < 0.75 * dense.metrics["model_size_gzip_mb"]
    assert not any(hasattr(m, "weight_mask") for m in out.model.modules())  # masks folded before saving


def test_structured_iterative_pruning_reports_measured_params_and_macs(digits: Any, baseline: Any,
                                                                       tmp_path: Path) -> None:
    out = run("prune", copy.deepcopy(baseline), digits, tmp_path, ratio=0.5, iterative_steps=2,
              finetune_epochs=1, importance="taylor")
    m = out.metrics
    assert m["params_after"] == sum(p.numel() for p in out.model.parameters())
    assert 0.2 < m["params_after"] / m["params_before"] < 0.3  # ~(1 - 0.5)^2 of the channels' weights
    assert m["macs_after"] < 0.3 * m["macs_before"] and m["sparsity"] == 0.0


def test_fine_tuning_epochs_are_split_over_the_steps() -> None:
    assert epochs_per_step(5, 2) == [2, 3] and epochs_per_step(0, 3) == [0, 0, 0] and epochs_per_step(3, 1) == [3]


def test_a_named_earlier_teacher_is_loaded_instead_of_the_baseline(digits: Any, baseline: Any, tmp_path: Path) -> None:
    pruned = run("prune", copy.deepcopy(baseline), digits, tmp_path / "p", ratio=0.3).model
    asked = []

    def load(name: str) -> Any:
        asked.append(name)
        return copy.deepcopy(pruned)

    cls = REGISTRY["distill"]
    ctx = StageContext(task=digits, work_dir=tmp_path, seed=0, teacher=lambda: pytest.fail("baseline loaded"),
                       load=load)
    cls(cls.Params(epochs=1, teacher="prune")).run(ctx, copy.deepcopy(pruned))
    assert asked == ["prune"]


def test_the_hidden_state_loss_trains_a_projection_between_widths(digits: Any, baseline: Any, tmp_path: Path) -> None:
    pruned = run("prune", copy.deepcopy(baseline), digits, tmp_path / "p", ratio=0.5).model
    out = run("distill", copy.deepcopy(pruned), digits, tmp_path / "d", teacher=baseline, epochs=2,
              hidden_weight=1.0)
    assert out.metrics["hidden_loss"] > 0
    assert not out.model[-1]._forward_pre_hooks  # the recording hooks are removed before the model is saved
    x, _ = next(digits.batches("test", 8))
    assert out.model(x).shape == (8, 10)


def test_a_node_can_load_any_ancestor_through_the_cache(tmp_path: Path) -> None:
    from orchestrator.artifacts import torch_io
    from orchestrator.engine.cache import Cache
    from orchestrator.engine.execute import _load_ancestor

    class Linear1:  # a task whose architecture is Linear(1, 1): the stored width is restored on load
        def architecture_spec(self, model):
            return {}

        def architecture(self, spec):
            return torch.nn.Linear(1, 1)

    task = Linear1()
    cache = Cache(tmp_path / "cache")
    for width, (key, stage, parent) in enumerate([("r", "baseline", None), ("q", "fakequant", "r"),
                                                  ("p", "prune", "q"), ("d", "distill", "p")], start=1):
        staged = cache.staging(key)
        name = torch_io.save(torch.nn.Linear(width, 1), staged, task)  # the width tells the models apart
        cache.commit(key, staged, {"stage": stage, "parent": parent, "model_file": name})
    assert _load_ancestor(cache, "p", task, "quantize").in_features == 2  # fakequant is written `quantize`
    assert _load_ancestor(cache, "p", task, "prune").weight.shape == (1, 3)  # the parent itself counts
    assert _load_ancestor(cache, "p", task, "baseline").in_features == 1
    with pytest.raises(LookupError, match="distill"):
        _load_ancestor(cache, "p", task, "distill")  # below, not above


def test_prune_multiple_of_rounds_kept_ffn_neurons_down_and_stays_out_of_old_keys() -> None:
    """Pruned rows that fit block quantizers (GGUF's Q4_0 needs multiples of 32); 1 = as before, same key."""
    import copy

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from orchestrator.stages.prune import Prune
    from orchestrator.tasks.lm.model import prune_ffn

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=100, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(copy.deepcopy(config))
    scores = [torch.rand(100) for _ in range(2)]
    assert prune_ffn(model, 0.3, scores, 32) == 64  # 70 kept -> 64
    assert model.model.layers[1].mlp.down_proj.weight.shape == (32, 64)
    assert prune_ffn(LlamaForCausalLM(copy.deepcopy(config)), 0.3, scores) == 70
    own = {"ratio": 0.3, "multiple_of": 1}
    assert Prune.plan_params(own, {}, (), "prune") == {"ratio": 0.3}
    assert Prune.plan_params({**own, "multiple_of": 32}, {}, (), "prune")["multiple_of"] == 32
