"""The smallest real recipe end to end through the CLI: MLflow layout, cache reuse, SIGKILL + resume."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REFERENCE, ROOT, cli_args, copy_store, run_cli
from mlflow.tracking import MlflowClient

FIVE = ("accuracy", "model_size_mb", "params", "latency_p50_ms", "latency_p95_ms")


def sweep_runs(uri: str, experiment: str = "pkdq") -> list[dict]:
    """Runs of the newest parent run: [parent, children...] as plain dicts."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return [parent, *kids]


@pytest.fixture(scope="module")
def first(pkdq_reference):
    """The session's reference pkdq sweep (its pick registered as digits-pick): read only."""
    return pkdq_reference


def test_mlflow_holds_parent_baseline_and_one_leaf_per_variant(first):
    store, out = first
    parent, *kids = sweep_runs(store["uri"])
    assert parent.info.status == "FINISHED"
    client = MlflowClient(store["uri"])
    assert "config.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    baseline = [r for r in kids if r.data.tags["orchestrator.pipeline"] == "baseline"]
    leaves = [r for r in kids if r.data.tags["orchestrator.leaf"] == "true"]
    assert len(baseline) == 1 and len(leaves) == 4 and len(kids) == 11
    base = baseline[0].data.metrics
    for leaf in leaves:
        tags, metrics, params = leaf.data.tags, leaf.data.metrics, leaf.data.params
        assert tags["orchestrator.pipeline"] == "prune>distill>quantize"
        assert tags["orchestrator.cached"] == "false" and len(tags["orchestrator.node_key"]) == 20
        assert all(m in metrics for m in FIVE)
        # the whole chain is visible on the leaf: every stage's params and the ancestors' metrics
        assert {"task.epochs", "prune.ratio", "distill.temperature", "export.opset", "quantize.mode"} <= set(params)
        assert "prune/accuracy" in metrics and "baseline/accuracy" in metrics
        assert tags["orchestrator.model_id"] in [o.model_id for o in leaf.outputs.model_outputs]
        if params["quantize.mode"] == "int8":
            assert metrics["model_size_mb"] <= 0.35 * base["model_size_mb"]
            assert metrics["accuracy"] >= base["accuracy"] - 0.02
    assert "4 variants" not in out.stdout  # the table, not the dry-run summary
    assert "11 unique nodes: 11 stage executions" in out.stdout


def test_models_are_mlflow_onnx_models_and_the_pick_is_registered(first, digits):
    import mlflow

    store, out = first
    parent, *kids = sweep_runs(store["uri"])
    client = MlflowClient(store["uri"])
    mlflow.set_tracking_uri(store["uri"])
    (version,) = client.search_model_versions("name = 'digits-pick'")
    picked = next(r for r in kids if r.data.tags.get("orchestrator.recommended") == "true")
    assert version.run_id == picked.info.run_id
    assert version.source == f"models:/{picked.data.tags['orchestrator.model_id']}"
    # the pick is the fastest variant, which on a loaded machine can be the baseline (whose run has no variant tag)
    assert version.tags["orchestrator.variant"] == picked.data.tags.get("orchestrator.variant", "baseline")
    assert float(version.tags["metric.accuracy"]) == pytest.approx(picked.data.metrics["accuracy"], rel=1e-5)
    assert version.tags["orchestrator.sweep_run_id"] == parent.info.run_id
    assert "as digits-pick version 1 in the MLflow Model Registry" in out.stdout
    feeds, labels = next(digits.onnx_batches("test", 64))
    for uri in ("models:/digits-pick/1", f"models:/{kids[0].data.tags['orchestrator.model_id']}"):
        logits = mlflow.pyfunc.load_model(uri).predict(feeds)  # ONNX flavor, straight from the store
        assert (next(iter(logits.values())).argmax(-1) == labels).mean() > 0.8


def test_rerun_recomputes_nothing(first, tmp_path):
    store = copy_store(first[0], tmp_path / "copy")  # the rerun logs a second sweep: not into the shared store
    before = {r.data.tags["orchestrator.node_key"]: r.data.tags["orchestrator.model_id"]
              for r in sweep_runs(store["uri"])[1:]}
    out = run_cli(store, *REFERENCE)
    assert out.returncode == 0, out.stderr
    assert "11 unique nodes: 0 stage executions, 11 from cache" in out.stdout
    parent, *kids = sweep_runs(store["uri"])
    assert parent.data.metrics["stage_executions"] == 0
    assert {r.data.tags["orchestrator.cached"] for r in kids} == {"true"}
    # a cache hit logs no second copy: it points at the model the first sweep logged
    assert {r.data.tags["orchestrator.node_key"]: r.data.tags["orchestrator.model_id"] for r in kids} == before


def test_dry_run_marks_cached_and_new(first):
    store, _ = first
    out = run_cli(store, *REFERENCE, "stages.distill.epochs=2", "dry_run=true")
    assert out.returncode == 0, out.stderr
    assert "11 nodes (3 cached, 8 new), 4 variants" in out.stdout


def _nodes(cache: Path) -> list[Path]:
    folder = cache / "nodes"
    return list(folder.iterdir()) if folder.exists() else []


def test_sigkill_then_rerun_completes_with_same_metrics(first, tmp_path):
    reference = {r.data.params.get("prune.ratio", "") + r.data.params.get("quantize.mode", ""): r.data.metrics
                 for r in sweep_runs(first[0]["uri"])[1:] if r.data.tags["orchestrator.leaf"] == "true"}
    store = {"cache": str(tmp_path / "cache"), "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
             "artifacts": str(tmp_path / "art")}
    proc = subprocess.Popen(cli_args(store, "+recipe=pkdq"), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 300
    while len(_nodes(Path(store["cache"]))) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _nodes(Path(store["cache"]))
    assert 4 <= len(done_before) < 11, "the kill should land mid-sweep"
    for node in done_before:  # nothing half-written is visible as finished
        assert (node / "meta.json").is_file()
    out = run_cli(store, "+recipe=pkdq")
    assert out.returncode == 0, out.stderr
    assert f"{11 - len(done_before)} stage executions, {len(done_before)} from cache" in out.stdout
    assert not any((Path(store["cache"]) / "tmp").iterdir())  # the killed run's staging was swept
    for run in sweep_runs(store["uri"])[1:]:
        if run.data.tags["orchestrator.leaf"] == "true":
            ref = reference[run.data.params["prune.ratio"] + run.data.params["quantize.mode"]]
            for metric in ("accuracy", "model_size_mb", "params"):
                assert run.data.metrics[metric] == pytest.approx(ref[metric]), metric
    # the killed invocation's parent run does not stay RUNNING forever
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("pkdq")
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")


def test_pool_executor_gives_the_same_models(first, tmp_path):
    store = {"cache": str(tmp_path / "cache"), "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
             "artifacts": str(tmp_path / "art")}
    out = run_cli(store, "+recipe=pkdq", "executor=pool", "tracking.log_models=false")
    assert out.returncode == 0, out.stderr
    assert "11 unique nodes: 11 stage executions" in out.stdout
    first_nodes = {p.name for p in _nodes(Path(first[0]["cache"]))}
    assert {p.name for p in _nodes(Path(store["cache"]))} == first_nodes


def test_two_sweeps_on_one_cache_split_the_work(first, tmp_path):
    """Scale-out: two invocations sharing a cache compute each node once between them, and both finish."""
    store = {"cache": str(tmp_path / "cache"), "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
             "artifacts": str(tmp_path / "art")}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen(cli_args(store, "+recipe=pkdq", "tracking.log_models=false"), cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    executed = [int(re.search(r"11 unique nodes: (\d+) stage executions", o).group(1)) for o in outs]
    assert sum(executed) == 11, executed
