"""ONNX Runtime quantization on real models: accuracy, size and an honest count of what was quantized."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from orchestrator.measure.evaluate import quality, session
from orchestrator.stages import REGISTRY, StageContext
from orchestrator.stages.quantize import Quantize, QuantizeParams


def ctx(task: Any, folder: Path) -> StageContext:
    folder.mkdir(parents=True, exist_ok=True)
    return StageContext(task=task, work_dir=folder, seed=0, teacher=lambda: None)


def accuracy(task: Any, path: Path) -> float:
    return quality(task, session(path, 1), 256)["accuracy"]


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory, digits: Any, baseline: Any) -> Path:
    export = REGISTRY["export"](REGISTRY["export"].Params())
    return export.run(ctx(digits, tmp_path_factory.mktemp("fp32")), copy.deepcopy(baseline)).model


@pytest.mark.parametrize("calibration", ["minmax", "entropy", "percentile"])
def test_static_int8_stays_within_one_point_of_fp32(calibration: str, digits: Any, fp32: Path,
                                                    tmp_path: Path) -> None:
    params = QuantizeParams(mode="int8", method="static", calibration=calibration, calib_samples=128)
    out = Quantize(params).run(ctx(digits, tmp_path), fp32)
    assert out.metrics["calib_samples"] == 128
    assert out.metrics["quantized_params_frac"] == pytest.approx(1.0)  # weights and biases, scales aside
    import onnx

    ops = {n.op_type for n in onnx.load(str(out.model)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    assert accuracy(digits, out.model) >= accuracy(digits, fp32) - 0.01
    assert out.model.stat().st_size < 0.35 * fp32.stat().st_size


@pytest.mark.parametrize("mode, low, high", [("int8", 0.99, 1.0), ("fp16", 1.0, 1.0), ("int4", 0.85, 0.9)])
def test_every_mode_reports_what_it_quantized(mode: str, low: float, high: float, digits: Any, fp32: Path,
                                              tmp_path: Path) -> None:
    out = Quantize(QuantizeParams(mode=mode)).run(ctx(digits, tmp_path), fp32)
    # int4 (MatMulNBits) leaves the convolutions float: only the two Linear weights, ~87% of the params
    assert low <= out.metrics["quantized_params_frac"] <= high
    assert accuracy(digits, out.model) >= accuracy(digits, fp32) - 0.02


def test_int4_rewrites_gemm_first_or_it_would_quantize_nothing(digits: Any, fp32: Path, tmp_path: Path) -> None:
    import onnx

    out = Quantize(QuantizeParams(mode="int4", block_size=32)).run(ctx(digits, tmp_path), fp32)
    assert out.metrics["gemm_rewritten"] == 2 and out.metrics["quantized_tensors"] == 2
    ops = [n.op_type for n in onnx.load(str(out.model)).graph.node]
    assert ops.count("MatMulNBits") == 2 and "Gemm" not in ops


def tiny_bert_onnx(folder: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A randomly initialized 2-layer BERT classifier exported with the default exporter."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=2000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64, num_labels=2)
    model = BertForSequenceClassification(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits

    ids = torch.randint(0, 2000, (2, 16))
    from orchestrator.artifacts.onnx_utils import torch_export

    path = folder / "bert.onnx"
    torch_export(Logits().eval(), (ids, torch.ones_like(ids)), path, ["input_ids", "attention_mask"], ["logits"],
                 17, "torchscript")
    return path, {"input_ids": ids.numpy(), "attention_mask": np.ones_like(ids.numpy())}


def test_on_a_transformer_int4_is_smaller_than_dynamic_int8(tmp_path: Path) -> None:
    path, feeds = tiny_bert_onnx(tmp_path)
    sizes, fracs = {}, {}
    for mode in ("int8", "int4"):
        out = Quantize(QuantizeParams(mode=mode, block_size=32)).run(ctx(None, tmp_path / mode), path)
        sizes[mode], fracs[mode] = out.model.stat().st_size, out.metrics["quantized_params_frac"]
        logits = session(out.model, 1).run(None, feeds)[0]
        assert logits.shape == (2, 2) and np.isfinite(logits).all()
    assert sizes["int4"] < 0.8 * sizes["int8"] < 0.8 * path.stat().st_size
    assert fracs["int4"] > 0.9 and fracs["int8"] > 0.9  # embeddings (Gather) included in both


class SplitSpy:
    """The digits task, recording which splits `onnx_batches` was asked for."""

    def __init__(self, task: Any) -> None:
        self.task, self.splits = task, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def onnx_batches(self, split: str, batch_size: int, *args: Any, **kwargs: Any) -> Any:
        self.splits.append(split)
        return self.task.onnx_batches(split, batch_size, *args, **kwargs)


@pytest.mark.parametrize("algorithm", ["rtn", "k_quant", "hqq", "gptq"])
def test_every_weight_only_algorithm_writes_matmulnbits(algorithm: str, digits: Any, fp32: Path,
                                                        tmp_path: Path) -> None:
    import onnx

    spy = SplitSpy(digits)
    params = QuantizeParams(mode="int4", block_size=32, algorithm=algorithm, calib_samples=64)
    out = Quantize(params).run(ctx(spy, tmp_path), fp32)
    ops = [n.op_type for n in onnx.load(str(out.model)).graph.node]
    assert ops.count("MatMulNBits") == 2 and "Gemm" not in ops and out.metrics["quantized_tensors"] == 2
    assert out.metrics["quant_algorithm"] == ["rtn", "k_quant", "hqq", "gptq"].index(algorithm)
    assert out.metrics["quant_seconds"] > 0
    assert spy.splits == (["calib"] if algorithm == "gptq" else [])  # gptq calibrates on calib, never test
    acc = accuracy(digits, out.model)
    print(f"{algorithm}: accuracy {acc:.4f} (fp32 {accuracy(digits, fp32):.4f}), {out.metrics['quant_seconds']:.2f}s")
    assert acc >= accuracy(digits, fp32) - 0.03


def test_algorithm_is_keyed_only_where_it_applies_and_only_when_not_rtn() -> None:
    from orchestrator.errors import ConfigError

    plan = lambda **own: Quantize.plan_params(own, {}, (), "quantize")  # noqa: E731
    assert "algorithm" not in plan(mode="int4") and "algorithm" not in plan(mode="int4", algorithm="rtn")
    assert plan(mode="int4", algorithm="hqq")["algorithm"] == "hqq" and "calib_samples" not in plan(
        mode="int4", algorithm="hqq")
    assert plan(mode="q4f16", algorithm="gptq")["calib_samples"] == 256
    assert "algorithm" not in plan(mode="int8", algorithm="gptq") and "algorithm" not in plan(
        mode="int4_int8", int4_matmul=False, algorithm="k_quant")
    with pytest.raises(ConfigError, match="algorithm"):
        QuantizeParams(mode="int4", algorithm="awq")
    for algorithm in ("gptq", "hqq"):  # no 8-bit MatMulNBits that ORT's CPU kernel runs
        with pytest.raises(ConfigError, match="8-bit"):
            QuantizeParams(mode="int8_weight", algorithm=algorithm)


@pytest.mark.parametrize("calibration", ["entropy", "percentile"])
def test_histogram_calibration_survives_an_activation_too_small_to_bin(calibration: str, tmp_path: Path) -> None:
    """x * 1e-44 is all subnormal: numpy cannot split its range into bins ("Too many bins for data range")."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([1e-44], np.float32), "scale"),
             numpy_helper.from_array(rng.normal(size=(64, 32)).astype(np.float32), "w")]
    nodes = [helper.make_node("Mul", ["x", "scale"], ["tiny"]), helper.make_node("MatMul", ["tiny", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 32])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))

    class Task:
        def onnx_batches(self, split: str, batch_size: int) -> Any:
            for _ in range(4):
                yield {"x": rng.normal(size=(batch_size, 64)).astype(np.float32)}, np.zeros(batch_size)

    params = QuantizeParams(mode="int8", method="static", calibration=calibration, calib_samples=64)
    out = Quantize(params).run(ctx(Task(), tmp_path / "q"), tmp_path / "m.onnx")
    assert out.metrics["quantized_tensors"] == 1
    y = session(out.model, 1).run(None, {"x": np.ones((2, 64), np.float32)})[0]
    assert y.shape == (2, 32) and np.isfinite(y).all()


@pytest.mark.parametrize("mode, algorithm, nbits", [("int8_weight", "k_quant", 2),
                                                    ("q4f16", "gptq", 2), ("int4_int8", "hqq", 2)])
def test_algorithms_in_the_other_weight_only_modes(mode: str, algorithm: str, nbits: int, digits: Any, fp32: Path,
                                                   tmp_path: Path) -> None:
    """int8_weight keeps 8 bits with k_quant; q4f16 and int4_int8 get the algorithm's int4 MatMuls."""
    import onnx

    out = Quantize(QuantizeParams(mode=mode, algorithm=algorithm, calib_samples=32)).run(ctx(digits, tmp_path), fp32)
    proto = onnx.load(str(out.model))
    found = [n for n in proto.graph.node if n.op_type == "MatMulNBits"]
    assert len(found) == nbits
    bits = {a.i for n in found for a in n.attribute if a.name == "bits"}
    assert bits == {8 if mode == "int8_weight" else 4}
    assert accuracy(digits, out.model) >= accuracy(digits, fp32) - 0.03


def test_gptq_is_refused_on_a_kv_cache_language_model() -> None:
    """Its graph takes past key/values besides the calibration examples, as for static int8."""
    from orchestrator.errors import ConfigError

    class LM:
        name, kv_cache = "tinylm", True

    with pytest.raises(ConfigError, match="stages.quantize.algorithm"):
        Quantize.check_task(QuantizeParams(mode="int4", algorithm="gptq"), LM)
    Quantize.check_task(QuantizeParams(mode="int4", algorithm="k_quant"), LM)


def test_static_int8_keeps_an_integer_kernel_for_a_head_on_flat_features(tmp_path: Path) -> None:
    """An embedding, then a Gemm head over 2-D features (as BERT's classifier), weights per channel.
    Storing the table int8 turns the Gemm into MatMul + Add, which ORT fuses back into a Gemm whose integer
    kernel needs a quantized output: that output stays quantized (left float, ORT ran a float Gemm and
    dequantized the weight on every call)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(500, 16)).astype(np.float32), "table"),
             numpy_helper.from_array(rng.normal(size=(16, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=16).astype(np.float32), "b")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"), helper.make_node("Tanh", ["e"], ["t"]),
             helper.make_node("Gemm", ["t", "w", "b"], ["y"], name="head", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))

    class Ids:
        def onnx_batches(self, split: str, batch_size: int) -> Any:
            for _ in range(4):
                yield {"ids": rng.integers(0, 500, size=4)}, np.zeros(4)

    params = QuantizeParams(mode="int8", method="static", calib_samples=16, per_channel=True)
    out = Quantize(params).run(ctx(Ids(), tmp_path / "q"), tmp_path / "m.onnx")
    assert out.metrics["ort_int_kernels"] == 1 and out.metrics["ort_float_kernels"] == 0, out.metrics


def _attention_like(path: Path, mask: float = 0.0) -> None:
    """x @ w1 = h; h @ h^T (two activations, as attention scores) + mask; @ h; @ w2; + x (a residual).
    `mask` fills half of an added constant (an attention mask is -3.4e38 where a token is padding)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    add = np.zeros((1, 1, 8), np.float32)  # 3-D like a transformer's (2-D lets the pre-processing make Gemms)
    add[0, 0, 4:] = mask
    inits = [numpy_helper.from_array(rng.normal(size=(16, 16)).astype(np.float32), n) for n in ("w1", "w2")]
    inits.append(numpy_helper.from_array(add, "mask"))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="weight1"),
             helper.make_node("Transpose", ["h"], ["ht"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["h", "ht"], ["s"], name="scores"),
             helper.make_node("Add", ["s", "mask"], ["sm"]),
             helper.make_node("Softmax", ["sm"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "h"], ["c"], name="context"),
             helper.make_node("MatMul", ["c", "w2"], ["o"], name="weight2"),
             helper.make_node("Add", ["o", "x"], ["y"], name="residual")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


class _Rows:
    def onnx_batches(self, split: str, batch_size: int) -> Any:
        rng = np.random.default_rng(1)
        for _ in range(4):
            yield {"x": rng.normal(size=(1, 8, 16)).astype(np.float32)}, np.zeros(1)


def test_static_int8_quantizes_the_weight_operators_with_uint8_activations(tmp_path: Path) -> None:
    """Only MatMuls that read a weight get QDQ, activations asymmetric uint8 (U8S8: what x86 kernels fuse);
    ORT then runs both as integer kernels and the attention-like MatMuls in float."""
    import onnx

    _attention_like(tmp_path / "m.onnx")
    out = Quantize(QuantizeParams(mode="int8", method="static", calib_samples=16)).run(ctx(_Rows(), tmp_path / "q"),
                                                                                       tmp_path / "m.onnx")
    proto = onnx.load(str(out.model))
    produced = {o: n for n in proto.graph.node for o in n.output}
    fed = {n.name: [produced[i].op_type if i in produced else "input" for i in n.input]
           for n in proto.graph.node if n.op_type == "MatMul"}
    assert fed["weight1"] == ["DequantizeLinear", "DequantizeLinear"] == fed["weight2"]
    quantized = {i for n in proto.graph.node if n.op_type == "QuantizeLinear" for i in n.input}
    assert not quantized & {"s", "sm", "p"}  # the scores, the masked scores, the softmax stay float
    assert not quantized & {"h", "o"}  # weight operators' outputs stay float
    assert next(n for n in proto.graph.node if n.name == "residual").input == ["o", "x"]  # x read in float
    zero_points = {i.name: i.data_type for i in proto.graph.initializer if i.name.endswith("_zero_point")}
    activation_zps = [t for name, t in zero_points.items() if not name.startswith("w")]
    assert activation_zps and set(activation_zps) == {onnx.TensorProto.UINT8}
    assert out.metrics["ort_int_kernels"] >= 2 and out.metrics["ort_float_kernels"] >= 1, out.metrics


@pytest.mark.parametrize("calibration", ["entropy", "percentile"])
def test_histogram_calibration_survives_an_attention_mask_of_float_extremes(calibration: str,
                                                                            tmp_path: Path) -> None:
    """A -3.4e38 mask in a calibrated tensor: the histogram range's width overflowed float32 ("Too many bins")."""
    _attention_like(tmp_path / "m.onnx", mask=float(np.finfo(np.float32).min))
    params = QuantizeParams(mode="int8", method="static", calibration=calibration, calib_samples=16)
    out = Quantize(params).run(ctx(_Rows(), tmp_path / "q"), tmp_path / "m.onnx")
    y = session(out.model, 1).run(None, {"x": np.ones((1, 8, 16), np.float32)})[0]
    assert y.shape == (1, 8, 16) and np.isfinite(y).all()


def test_static_int8_stores_embedding_tables_as_int8_rows(tmp_path: Path) -> None:
    """A Gather on a float table: the table is stored int8 and the gathered rows dequantized, as dynamic does."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = rng.normal(size=(500, 16)).astype(np.float32)
    inits = [numpy_helper.from_array(table, "table"),
             numpy_helper.from_array(rng.normal(size=(16, 4)).astype(np.float32), "w")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("MatMul", ["e", "w"], ["y"], name="head")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))

    class Ids:
        def onnx_batches(self, split: str, batch_size: int) -> Any:
            for _ in range(4):
                yield {"ids": rng.integers(0, 500, size=(1, 8))}, np.zeros(1)

    out = Quantize(QuantizeParams(mode="int8", method="static", calib_samples=4)).run(ctx(Ids(), tmp_path / "q"),
                                                                                      tmp_path / "m.onnx")
    proto = onnx.load(str(out.model))
    floats = [i.name for i in proto.graph.initializer if i.data_type == TensorProto.FLOAT and i.dims == [500, 16]]
    assert not floats and Path(out.model).stat().st_size < 0.5 * table.nbytes
    ids = np.arange(8)[None]
    y = session(out.model, 1).run(None, {"ids": ids})[0]
    assert np.abs(y - table[ids] @ numpy_helper.to_array(inits[1])).max() < 0.2
