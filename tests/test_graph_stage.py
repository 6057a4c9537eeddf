"""The graph stage: onnxslim and ONNX Runtime optimization levels, measured as node counts, outputs unchanged."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.measure.evaluate import session
from orchestrator.stages import REGISTRY, StageContext


def run(name: str, model: Any, task: Any, folder: Path, **params: Any) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    cls = REGISTRY[name]
    return cls(cls.Params(**params)).run(StageContext(task=task, work_dir=folder, seed=0, teacher=lambda: None), model)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory, digits: Any, baseline: Any) -> Path:
    return run("export", copy.deepcopy(baseline), digits, tmp_path_factory.mktemp("fp32")).model


@pytest.mark.parametrize("level, fewer", [("basic", False), ("extended", True), ("all", True)])
def test_each_level_logs_node_counts_and_keeps_the_outputs(level: str, fewer: bool, digits: Any, fp32: Path,
                                                           tmp_path: Path) -> None:
    out = run("graph", fp32, digits, tmp_path, level=level)
    m = out.metrics
    assert m["nodes_before"] == 9  # conv relu conv relu pool flatten gemm relu gemm
    assert (m["nodes_after"] < m["nodes_before"]) is fewer  # extended fuses Conv+Relu and Gemm+Relu
    x = next(digits.batches("test", 32))[0].numpy()
    np.testing.assert_allclose(session(out.model, 1).run(None, {"input": x})[0],
                               session(fp32, 1).run(None, {"input": x})[0], rtol=1e-4, atol=1e-4)


def test_slim_alone_writes_a_model(digits: Any, fp32: Path, tmp_path: Path) -> None:
    out = run("graph", fp32, digits, tmp_path, level="none", slim=True)
    assert out.model.is_file() and out.metrics["nodes_after"] == out.metrics["nodes_after_slim"] <= 9
