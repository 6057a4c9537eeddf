"""Measurements on real ONNX Runtime sessions: every metric present and sane, memory isolated in a child."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.artifacts.onnx_utils import gzip_size_bytes, size_bytes, sparsity
from orchestrator.measure.evaluate import EvalSettings, eval_hash, measure_onnx, predict, session
from orchestrator.measure.probe import probe

ROOT = Path(__file__).resolve().parent.parent
QUICK = EvalSettings(warmup=2, repeats=30, throughput_batch=32, throughput_repeats=5)
EXPECTED = {"model_size_mb", "model_size_gzip_mb", "params", "sparsity", "accuracy", "f1", "teacher_agreement",
            "latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms", "latency_cv",
            "throughput_per_s", "load_ms", "first_inference_ms", "peak_rss_mb", "peak_rss_delta_mb"}


@pytest.fixture(scope="module")
def baseline_onnx(tmp_path_factory: pytest.TempPathFactory, digits: Any, baseline: Any) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "baseline.onnx"
    digits.export(baseline, path, 17, "torchscript")
    return path


@pytest.fixture(scope="module")
def perturbed_onnx(tmp_path_factory: pytest.TempPathFactory, digits: Any, baseline: Any) -> Path:
    """The baseline with noisy classifier weights: it disagrees with the baseline on some inputs."""
    import torch

    model = copy.deepcopy(baseline)
    torch.manual_seed(0)
    with torch.no_grad():
        model[-1].weight.add_(torch.randn_like(model[-1].weight) * model[-1].weight.std() * 2)
    path = tmp_path_factory.mktemp("onnx") / "perturbed.onnx"
    digits.export(model, path, 17, "torchscript")
    return path


def test_baseline_measurement_has_every_metric(digits: Any, baseline_onnx: Path) -> None:
    m = measure_onnx(digits, baseline_onnx, QUICK)
    assert set(m) == EXPECTED
    assert m["latency_p50_ms"] <= m["latency_p90_ms"] <= m["latency_p95_ms"] <= m["latency_p99_ms"]
    assert m["latency_cv"] >= 0 and m["throughput_per_s"] > 0 and m["load_ms"] > 0 and m["first_inference_ms"] > 0
    assert 0 < m["model_size_gzip_mb"] < m["model_size_mb"] == pytest.approx(size_bytes(baseline_onnx) / 1e6)
    assert m["teacher_agreement"] == 1.0  # no reference: this is the baseline
    assert 0.5 < m["accuracy"] <= 1 and 0.5 < m["f1"] <= 1
    assert 0 < m["peak_rss_delta_mb"] < m["peak_rss_mb"]


def test_teacher_agreement_is_top1_agreement_with_the_baseline(digits: Any, baseline_onnx: Path,
                                                               perturbed_onnx: Path) -> None:
    m = measure_onnx(digits, perturbed_onnx, QUICK, reference=baseline_onnx)
    ours = predict(digits, session(perturbed_onnx, 1), 256)[0].argmax(-1)
    theirs = predict(digits, session(baseline_onnx, 1), 256)[0].argmax(-1)
    assert m["teacher_agreement"] == pytest.approx(float((ours == theirs).mean()))
    assert m["teacher_agreement"] < 1.0


def test_probe_child_does_not_inherit_the_parents_memory(baseline_onnx: Path) -> None:
    """A forked child keeps its parent's ru_maxrss across exec; the probe must not report that."""
    ballast = np.ones(400_000_000 // 8)  # 400 MB resident in this process
    one = {"input": np.zeros((1, 1, 8, 8), np.float32)}
    big = {"input": np.zeros((32, 1, 8, 8), np.float32)}
    result = probe(baseline_onnx, one, big, threads=1)
    assert ballast.sum() > 0
    assert result["peak_rss_mb"] < 300, result


def test_sparsity_counts_zero_floats_and_integer_zero_points(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([0, 0, 1.5, 2], np.float32), "fc.weight"),       # 2 of 4 zero
             numpy_helper.from_array(np.array([3, 3, 5, -1], np.int8), "conv.weight_quantized"),  # 2 at zero point
             numpy_helper.from_array(np.array(3, np.int8), "conv.weight_zero_point"),
             numpy_helper.from_array(np.array(0.1, np.float32), "conv.weight_scale"),
             numpy_helper.from_array(np.zeros(4, np.int64), "shape")]  # not a weight
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert sparsity(path) == 0.5


def test_gzip_size_is_the_compressed_file(baseline_onnx: Path) -> None:
    import gzip

    assert gzip_size_bytes(baseline_onnx) == len(gzip.compress(baseline_onnx.read_bytes(), compresslevel=9))


def test_eval_hash_covers_settings_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestrator.measure.evaluate as ev

    first = eval_hash(QUICK)
    assert eval_hash(EvalSettings(**{**vars(QUICK), "throughput_batch": 8})) != first
    monkeypatch.setattr(ev, "environment", lambda: {"onnxruntime": "0.0", "cpu": "other"})
    assert eval_hash(QUICK) != first


def test_metric_modules_load_offline_with_an_empty_hub_cache(tmp_path: Path) -> None:
    """Shipped `evaluate` modules score offline: accuracy, and macro f1 that exposes a neglected rare class."""
    code = ("import json, numpy as np; from orchestrator.measure import metrics;"
            "labels = np.array([0] * 9 + [1]); preds = np.zeros(10, int);"
            "print(json.dumps(metrics.classification(preds, labels)))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    scores = json.loads(out.stdout.strip().splitlines()[-1])
    assert scores["accuracy"] == pytest.approx(0.9)
    assert scores["f1"] == pytest.approx((2 * 0.9 / 1.9 + 0) / 2)  # class 0: P=0.9 R=1; class 1: 0
