"""ONNX rewrites: Gemm -> MatMul(+Add) keeps outputs; weight-only QDQ stores grid weights exactly; the census counts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from orchestrator.artifacts.onnx_utils import quantization_report, weight_census
from orchestrator.artifacts.qdq import gemm_to_matmul, weight_only_qdq
from orchestrator.measure.evaluate import session


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, digits: Any, baseline: Any) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    digits.export(baseline, path, 17, "torchscript")
    return path


def outputs(path: Path, x: np.ndarray) -> np.ndarray:
    return session(path, 1).run(None, {"input": x})[0]


def batch(digits: Any) -> np.ndarray:
    return next(digits.batches("test", 64))[0].numpy()


def test_gemm_to_matmul_gives_the_same_outputs(exported: Path, digits: Any, tmp_path: Path) -> None:
    proto = onnx.load(str(exported))
    assert gemm_to_matmul(proto) == 2
    ops = [n.op_type for n in proto.graph.node]
    assert "Gemm" not in ops and ops.count("MatMul") == 2 and ops.count("Add") == 2
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp_path / "mm.onnx"))
    np.testing.assert_allclose(outputs(tmp_path / "mm.onnx", batch(digits)), outputs(exported, batch(digits)),
                               rtol=1e-5, atol=1e-5)
    assert weight_census(tmp_path / "mm.onnx")["float_elems"] == weight_census(exported)["float_elems"]


@pytest.mark.parametrize("mode, bits", [("int8", 8), ("int4", 4)])
def test_weight_only_qdq_stores_grid_weights_exactly(mode: str, bits: int, digits: Any, baseline: Any,
                                                     tmp_path: Path) -> None:
    from orchestrator.artifacts import simquant

    model = copy.deepcopy(baseline)
    simquant.apply(model, mode)
    plain, _ = simquant.lower(model)
    digits.export(plain, tmp_path / "fp32.onnx", 17, "torchscript")
    proto = weight_only_qdq(onnx.load(str(tmp_path / "fp32.onnx")), bits)
    onnx.save(proto, str(tmp_path / "q.onnx"))
    x = batch(digits)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(outputs(tmp_path / "q.onnx", x), expected, rtol=1e-4, atol=1e-4)
    report = quantization_report(tmp_path / "fp32.onnx", tmp_path / "q.onnx")
    weights = sum(m.weight.numel() for m in plain.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert report["quantized_params"] == weights and report["quantized_tensors"] == 4
    ratio = (tmp_path / "q.onnx").stat().st_size / (tmp_path / "fp32.onnx").stat().st_size
    assert ratio < (0.3 if bits == 8 else 0.17)


def test_the_census_leaves_out_scales_and_counts_low_precision_tensors(exported: Path, tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(exported), str(tmp_path / "d.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    after = weight_census(tmp_path / "d.onnx")
    assert after["low_tensors"] == 4  # two conv and two linear weights; per-channel scales are not weights
    before = weight_census(exported)["float_elems"]
    assert before == 151306  # every float parameter of the digits CNN
    assert after["float_elems"] == 64 + 32 + 128 + 10 + 0  # the four biases stay float
