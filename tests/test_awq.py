"""Activation-aware scaling (`awq`): the grid it searches on is the final quantizer's, the float model is kept,
a planted salient channel is found, and the stage reads calibration windows only."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_accuracy_control import SplitSpy, ctx

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def lm() -> Any:
    from orchestrator.tasks.lm.tinylm import TinyLM, TinyLMParams

    return TinyLM(TinyLMParams(vocab_size=512, hidden_size=64, layers=2, heads=4, kv_heads=2, ffn=128, context=64,
                               train_tokens=30000, eval_tokens=2048, batch_size=8, calib_windows=16), seed=0)


@pytest.fixture(scope="module")
def planted(lm: Any) -> tuple[Any, int]:
    """The baseline with one salient input channel of layer 0's q/k/v: its activations x40 (the norm's weight)
    and its weight columns /40, so the model computes the same but rounding zeroes that channel's weights."""
    model = copy.deepcopy(lm.build_baseline())
    layer, channel = model.model.layers[0], 5
    with torch.no_grad():
        layer.input_layernorm.weight[channel] *= 40
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            proj.weight[:, channel] /= 40
    return model, channel


def test_the_symmetric_block_grid_is_onnx_runtimes_int4(tmp_path: Path) -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from orchestrator.artifacts.simquant import block_grid

    rng = np.random.default_rng(0)
    k, n = 96, 40
    w = (rng.standard_normal((k, n)) * rng.uniform(0.1, 3, (k, 1))).astype(np.float32)  # MatMul's (in, out)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
                              [numpy_helper.from_array(w, "W")])
    quantizer = MatMulNBitsQuantizer(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                                     bits=4, block_size=32, is_symmetric=True)
    quantizer.process()
    sess = ort.InferenceSession(quantizer.model.model.SerializeToString(), providers=["CPUExecutionProvider"])
    dequantized = sess.run(None, {"x": np.eye(k, dtype=np.float32)})[0]
    ours = block_grid(torch.from_numpy(w.T.copy()), 4, 32, symmetric=True).numpy().T
    assert np.abs(dequantized - w).max() > 0.1  # it did round
    np.testing.assert_array_equal(ours, dequantized)


def test_a_planted_salient_channel_is_scaled_up_and_the_float_model_kept(lm: Any, planted: tuple[Any, int]) -> None:
    from orchestrator.artifacts import awq

    model, channel = copy.deepcopy(planted[0]), planted[1]
    groups = lm.scale_groups(model)
    assert [g.name for g in groups[:4]] == ["layers.0.attn_in", "layers.0.attn_out", "layers.0.mlp_in",
                                           "layers.0.mlp_out"]
    stats = awq.capture(model, groups, (x for x, _ in lm.batches("calib", 4)), lm.forward, tokens=1024)
    assert stats["layers.0.attn_in"].count == 1024
    s, alpha, err, rtn = awq.search_scale(stats["layers.0.attn_in"], groups[0], 4, 32, True, 20)
    assert alpha > 0 and err < 0.5 * rtn  # rounding the salient channel's weights to zero was most of the error
    assert int(s.argmax()) == channel

    x = next(lm.batches("test", 2))[0]
    with torch.no_grad():
        before = lm.forward(model, x)
    metrics = awq.apply(model, groups, (x for x, _ in lm.batches("calib", 4)), lm.forward, clip=False,
                        log=lambda _: None)
    with torch.no_grad():
        after = lm.forward(model, x)
    assert float((after - before).abs().max()) < 1e-4 * float(before.abs().max())  # the same function
    assert metrics["awq_groups"] == 8 and metrics["awq_error_ratio"] < 0.7 and metrics["awq_clipped_frac"] == 0
    gqa = groups[1]  # v (2 kv heads) -> o (4 heads): one scale per kv channel, repeated over its 2 heads
    assert gqa.repeat == 2 and gqa.linears[0][1].in_features == 2 * gqa.prev.out_features


def test_the_stage_reads_calibration_windows_only_and_reports_its_gain(lm: Any, planted: tuple[Any, int],
                                                                      tmp_path: Path) -> None:
    from orchestrator.stages.awq import AWQ, AWQParams

    spy = SplitSpy(lm)
    out = AWQ(AWQParams(tokens=512, steps=10, clip=True)).run(ctx(spy, tmp_path), copy.deepcopy(planted[0]))
    assert spy.read == {"calib"}
    assert out.metrics["awq_tokens"] == 512 and 0 < out.metrics["awq_error_ratio"] < 1
    assert 0 < out.metrics["awq_clipped_frac"] < 1


def test_the_gram_matrix_gives_the_output_error_of_the_tokens() -> None:
    from orchestrator.artifacts import awq
    from orchestrator.artifacts.simquant import block_grid

    torch.manual_seed(0)
    x, w = torch.randn(300, 64) * torch.rand(64) * 4, torch.randn(24, 64)
    s = torch.rand(64) + 0.5
    direct = float(((x / s) @ block_grid(w * s, 4, 32, True).T - x @ w.T).pow(2).sum())
    via_gram = awq._error((x.T @ x), [w], s, 4, 32, True)
    assert via_gram == pytest.approx(direct, rel=1e-4)
