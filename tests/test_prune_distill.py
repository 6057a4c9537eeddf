"""Pruning, structured and unstructured, on real training: measured params, MACs, sparsity and gzip size."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from orchestrator.stages import REGISTRY, StageContext
from orchestrator.stages.prune import epochs_per_step


def run(name: str, model: Any, task: Any, folder: Path, teacher: Any = None, **params: Any) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    cls = REGISTRY[name]
    ctx = StageContext(task=task, work_dir=folder, seed=0, teacher=lambda: copy.deepcopy(teacher))
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
