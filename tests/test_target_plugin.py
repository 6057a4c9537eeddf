"""A measurement target defined outside the package runs through the real CLI with no project file edited.

The test writes a plugin module into tmp_path (a target that reports the model file's size in KB and the
p50 of a few calls of a real ONNX Runtime session), loads it through $ORCHESTRATOR_PLUGINS + PYTHONPATH,
and finds its numbers where a built-in target's go: the terminal table, the parent run's `report.md`, the
node runs in MLflow, the ratio metrics, the constraint it adds and the cache.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

PLUGIN = '''
"""A target from outside the package: the file's size in KB and a latency from a real ONNX Runtime session."""

import time
from dataclasses import dataclass

from orchestrator.measure.targets import Limit, Target


@dataclass
class KbSettings:
    runs: int = 3


class KbTarget(Target):
    name = "mytarget"
    title = "my runtime"
    Settings = KbSettings
    columns = (("mytarget_size_kb", "my KB", "{:.1f}"), ("mytarget_latency_p50_ms", "my p50 ms", "{:.4g}"))
    size_metric = "mytarget_size_kb"
    size_label = "file size (KB)"
    limits = (Limit("max_mytarget_kb", "mytarget_size_kb"),)

    def key_data(self, settings):
        return {"runs": settings.block(self.name).get("runs", 3), "version": "1"}

    def tags(self, settings):
        return {"mytarget.version": "1"}

    def measure(self, model, task, settings, reference=None):
        import onnxruntime as ort

        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        feeds, _ = next(task.onnx_batches("test", 1))
        times = []
        for _ in range(settings.block(self.name).get("runs", 3)):
            start = time.perf_counter()
            sess.run(None, feeds)
            times.append((time.perf_counter() - start) * 1e3)
        return {"mytarget_size_kb": model.stat().st_size / 1e3,
                "mytarget_latency_p50_ms": sorted(times)[len(times) // 2]}
'''
QUICK = ["stages.distill.epochs=1", "eval.throughput_repeats=5"]


def plugin_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "mytarget.py").write_text(textwrap.dedent(PLUGIN))
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(tmp_path)) if p)
    return {**os.environ, "ORCHESTRATOR_PLUGINS": "mytarget", "PYTHONPATH": path}


def test_the_plugin_is_nowhere_in_the_package():
    assert not [p for p in (ROOT / "orchestrator").rglob("*.py") if "mytarget" in p.read_text()]


def test_a_plugin_targets_settings_are_validated_like_built_ins(store, tmp_path):
    out = run_cli(store, "+recipe=pkdq", "eval.targets=[ort,mytarget]", "eval.mytarget.runs=abc", "dry_run=true",
                  env=plugin_env(tmp_path))
    assert out.returncode == 2 and "eval.mytarget.runs" in out.stderr, out.stderr[-2000:]


def test_a_plugin_target_that_takes_a_built_in_name_is_refused(store, tmp_path):
    env = plugin_env(tmp_path)
    (tmp_path / "mytarget.py").write_text(textwrap.dedent(PLUGIN).replace('name = "mytarget"', 'name = "browser"'))
    out = run_cli(store, "+recipe=pkdq", "dry_run=true", env=env)
    assert out.returncode == 2 and "clashes with the built-in target 'browser'" in out.stderr, out.stderr[-2000:]


@pytest.mark.slow
def test_a_plugin_target_reaches_the_table_the_report_and_mlflow(store, tmp_path):
    from mlflow.tracking import MlflowClient

    out = run_cli(store, "+recipe=pkdq", "eval.targets=[ort,mytarget]", "eval.mytarget.runs=5", *QUICK,
                  "report.target=mytarget", "report.max_mytarget_kb=1e9", env=plugin_env(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "my KB" in out.stdout and "my p50 ms" in out.stdout  # its columns in the terminal table
    assert "use the mytarget's numbers" in out.stdout and "mytarget_size_kb <= 1e+09" in out.stdout

    client = MlflowClient(tracking_uri=store["uri"])
    exp = client.get_experiment_by_name("pkdq")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    report = Path(client.download_artifacts(parent.info.run_id, "report.md", str(tmp_path))).read_text()
    assert "my KB" in report and "my p50 ms" in report  # its columns in the Markdown report
    assert "fastest (mytarget_latency_p50_ms)" in report
    assert parent.data.params["report.max_mytarget_kb"] == "1000000000.0"
    assert parent.data.tags["mytarget.version"] == "1"

    leaves = [r for r in runs if r.data.tags.get("orchestrator.leaf") == "true"]
    assert len(leaves) == 4
    for run in leaves:
        m = run.data.metrics
        assert m["mytarget_size_kb"] > 0 and m["mytarget_latency_p50_ms"] > 0
        assert m["baseline/mytarget_size_kb"] > m["mytarget_size_kb"] * 0.5  # the baseline's, kept for the report
        assert "mytarget_speedup" in m and "mytarget_size_kb_ratio" in m
    measured = list(Path(store["cache"]).glob("nodes/*/eval/mytarget-*.json"))
    assert len(measured) == 11  # every node, cached under the target's own key
