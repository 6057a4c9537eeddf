"""ONNX rewrites: Gemm -> MatMul(+Add) keeps outputs; the weight census counts what a quantizer did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from orchestrator.evaluate import session
from orchestrator.onnx_utils import gemm_to_matmul, weight_census


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


def test_the_census_leaves_out_scales_and_counts_low_precision_tensors(exported: Path, tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(exported), str(tmp_path / "d.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    after = weight_census(tmp_path / "d.onnx")
    assert after["low_tensors"] == 4  # two conv and two linear weights; per-channel scales are not weights
    before = weight_census(exported)["float_elems"]
    assert before == 151306  # every float parameter of the digits CNN
    assert after["float_elems"] == 64 + 32 + 128 + 10 + 0  # the four biases stay float
