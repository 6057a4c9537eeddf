"""Quantization in torch: weights on the grid, kept by pruning and training, exported as a real low-precision model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from orchestrator.artifacts import simquant
from orchestrator.measure.evaluate import session
from orchestrator.stages import REGISTRY, StageContext


def run(name: str, model: Any, task: Any, folder: Path, teacher: Any = None, **params: Any) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    cls = REGISTRY[name]
    ctx = StageContext(task=task, work_dir=folder, seed=0, teacher=lambda: copy.deepcopy(teacher))
    return cls(cls.Params(**params)).run(ctx, model)


@pytest.mark.parametrize("mode, levels", [("int8", 255), ("int4", 15)])
def test_fakequant_puts_every_weight_on_a_per_channel_grid(mode: str, levels: int, digits: Any,
                                                           baseline: Any, tmp_path: Path) -> None:
    out = run("fakequant", copy.deepcopy(baseline), digits, tmp_path, mode=mode)
    assert out.metrics["quantized_params_frac"] > 0.99  # every Conv/Linear weight; biases stay float
    for m in out.model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            assert type(m).__name__.startswith("FakeQuant") and m.fq_mode == mode
            for row in m.weight.detach().flatten(1):
                assert len(torch.unique(row)) <= levels
    assert simquant.off_grid(out.model) == 0.0


def test_the_straight_through_estimator_passes_gradients(digits: Any, baseline: Any) -> None:
    model = copy.deepcopy(baseline)
    simquant.apply(model, "int4")
    inputs, labels = next(digits.batches("train", 32))
    torch.nn.functional.cross_entropy(model(inputs), labels).backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0
               for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_a_fake_quantized_model_survives_saving(digits: Any, baseline: Any, tmp_path: Path) -> None:
    from orchestrator.artifacts import torch_io

    model = copy.deepcopy(baseline)
    simquant.apply(model, "int8")
    loaded = torch_io.load(tmp_path / torch_io.save(model, tmp_path, digits), digits)  # no pickle involved
    assert simquant.mode_of(loaded) == "int8"
    assert type(loaded[0]) is simquant.FakeQuantConv2d
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))


def test_pruning_keeps_the_quantization_and_counts_macs(digits: Any, baseline: Any, tmp_path: Path) -> None:
    model = run("fakequant", copy.deepcopy(baseline), digits, tmp_path / "q", mode="int8").model
    out = run("prune", model, digits, tmp_path / "p", ratio=0.5, finetune_epochs=1)
    assert simquant.mode_of(out.model) == "int8" and simquant.off_grid(out.model) == 0.0
    assert out.metrics["params_after"] < 0.3 * out.metrics["params_before"]
    assert 0 < out.metrics["macs_after"] < 0.3 * out.metrics["macs_before"]  # counted on the fake-quantized model


@pytest.mark.parametrize("mode, max_ratio", [("int8", 0.27), ("int4", 0.15), ("fp16", 0.51)])
def test_distill_after_quantize_is_qad_and_the_export_is_really_low_precision(
        mode: str, max_ratio: float, digits: Any, baseline: Any, tmp_path: Path) -> None:
    model = run("fakequant", copy.deepcopy(baseline), digits, tmp_path / "q", mode=mode).model
    student = run("distill", model, digits, tmp_path / "d", teacher=baseline, epochs=1).model
    assert simquant.mode_of(student) == mode and simquant.off_grid(student) == 0.0
    out = run("export", student, digits, tmp_path / "e")
    fp32 = run("export", copy.deepcopy(baseline), digits, tmp_path / "f").model
    assert out.model.stat().st_size < max_ratio * fp32.stat().st_size
    assert out.metrics["quantized_params_frac"] > 0.99
    x = next(digits.batches("test", 128))[0]
    with torch.no_grad():
        expected = student(x).numpy()
    got = session(out.model, 1).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=2e-3 if mode == "fp16" else 1e-4, rtol=1e-3)


def test_int4_on_the_final_block_grid_exports_bit_for_bit_as_quantize_stores_it(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    import onnx

    from orchestrator.tasks.lm.tinylm import TinyLM, TinyLMParams

    lm = TinyLM(TinyLMParams(vocab_size=512, hidden_size=64, layers=2, heads=4, kv_heads=2, ffn=128, context=64,
                             train_tokens=20000, eval_tokens=1024, batch_size=8), seed=0)
    out = run("fakequant", lm.build_baseline(), lm, tmp_path / "q", mode="int4", block_size=32)
    model = out.model
    assert out.metrics["fakequant_block"] == 32 and simquant.off_grid(model) == 0.0
    w = model.model.layers[0].mlp.down_proj.weight.detach()
    for block in w.reshape(-1, 32):  # 16 levels per block of 32 inputs, not per row
        assert len(torch.unique(block)) <= 16
    assert any(len(torch.unique(row)) > 16 for row in w)
    exported = run("export", model, lm, tmp_path / "e").model
    ops = {n.op_type for n in onnx.load(str(exported)).graph.node}
    assert "MatMulNBits" in ops and "GatherBlockQuantized" in ops  # the tied table too, as quantize int4 does
    x = next(lm.batches("test", 2))[0]
    with torch.no_grad():
        expected = lm.forward(model, x).numpy()
    got = lm.onnx_logits(session(exported, 1), {"input_ids": x["input_ids"].numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)  # measured: 1.2e-6 on logits up to 3.4


def test_the_planned_int4_grid_is_the_final_quantizers() -> None:
    from orchestrator.stages.fakequant import FakeQuant

    own = {"mode": "inherit", "block_size": "inherit", "epochs": 0}
    plan = FakeQuant.plan_params
    assert plan(own, {"quantize": {"mode": "int4", "block_size": 64, "symmetric": True}}, (), "q>p") == \
        {"mode": "int4", "block_size": 64, "epochs": 0}
    assert "block_size" not in plan(own, {"quantize": {"mode": "int4", "block_size": 64, "symmetric": False}}, (),
                                    "q>p")  # no asymmetric block grid: per output channel, keyed as before
    assert "block_size" not in plan(own, {"quantize": {"mode": "int8", "block_size": 32}}, (), "q>p")
    assert plan({**own, "block_size": 0}, {"quantize": {"mode": "int4"}}, (), "q>p") == {"mode": "int4", "epochs": 0}
