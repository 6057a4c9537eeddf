"""The executor's own logic with a fake stage (failure isolation, skipping), tracked in a real MLflow store."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from conftest import compose
from mlflow.tracking import MlflowClient

from orchestrator import stages
from orchestrator.engine.execute import execute
from orchestrator.engine.executors.base import FAILED, SKIPPED, NodeResult
from orchestrator.engine.plan import plan
from orchestrator.stages.base import TORCH, Stage, StageOutput
from orchestrator.sweep import run_sweep
from orchestrator.tasks import TASKS


@dataclass
class BoomParams:
    fail: bool = False


class Boom(Stage):
    """Passes the model through, or raises when asked to."""

    name, version, consumes, produces, Params = "boom", "1", TORCH, TORCH, BoomParams

    def run(self, ctx, model):
        if self.params.fail:
            raise RuntimeError("boom: injected failure")
        return StageOutput(model, {"boom_ran": 1.0})


@pytest.fixture
def with_boom(monkeypatch):
    monkeypatch.setitem(stages.REGISTRY, "boom", Boom)


def boom_config(store, **extra):
    cfg = compose("+recipe=pkdq", "task.epochs=2", "eval.warmup=1", "eval.repeats=5", "stages.distill.epochs=1",
                  f"cache.dir={store['cache']}", f"tracking.uri={store['uri']}",
                  f"tracking.artifact_root={store['artifacts']}")
    cfg["stages"]["boom"] = {"fail": False}
    cfg["pipeline"] = ["boom", "distill", "quantize"]
    cfg["sweep"] = {"stages.boom.fail": [True, False], "stages.quantize.mode": ["int8", "fp16"]}
    cfg.update(extra)
    return cfg


def test_failure_skips_only_its_subtree(with_boom, store):
    code = run_sweep(boom_config(store), "boomtest")
    assert code == 1
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("boomtest")
    runs = client.search_runs([exp.experiment_id])
    by_status = {}
    for run in runs:
        by_status.setdefault(run.data.tags.get("orchestrator.status", "parent"), []).append(run)
    assert len(by_status["failed"]) == 1  # the boom node with fail=True
    failed = by_status["failed"][0]
    assert failed.info.status == "FAILED"
    names = [a.path for a in client.list_artifacts(failed.info.run_id)]
    assert "traceback.txt" in names
    text = open(client.download_artifacts(failed.info.run_id, "traceback.txt")).read()
    assert "boom: injected failure" in text
    # its distill, export and 2 quantize descendants are skipped, not dropped
    assert len(by_status["skipped"]) == 4
    assert all(r.info.status == "KILLED" for r in by_status["skipped"])
    # the sibling branch finished: baseline + boom + distill + export + 2 quantize
    assert len(by_status["done"]) == 6
    leaves = [r for r in by_status["done"] if r.data.tags["orchestrator.leaf"] == "true"]
    assert {r.data.tags["orchestrator.pipeline"] for r in leaves} == {"boom>distill>quantize"}
    assert all("accuracy" in r.data.metrics for r in leaves)
    parent = [r for r in by_status["parent"] if "mlflow.parentRunId" not in r.data.tags][0]
    assert parent.info.status == "FAILED" and parent.data.metrics["failed_nodes"] == 1


def test_scheduler_alone_with_fake_compute(with_boom):
    cfg = boom_config({"cache": "unused", "uri": "unused", "artifacts": "unused"})
    the_plan = plan(cfg, stages.REGISTRY, TASKS)
    bad = {k for k, n in the_plan.nodes.items() if n.stage == "boom" and n.params["fail"]}

    def fake(job):
        return NodeResult(job.node.key, FAILED if job.node.key in bad else "done")

    order: list[str] = []
    results = execute(the_plan, lambda node: _Job(node), order.append, lambda n, r: None, compute_fn=fake)
    assert len(results) == len(the_plan.nodes)
    skipped = {k for k, r in results.items() if r.status == SKIPPED}
    assert skipped == {n.key for b in bad for n in the_plan.descendants(b)}
    assert not skipped & {n.key for n in order}  # skipped nodes were never started


class _Job:
    def __init__(self, node):
        self.node = node


def _dies_in_worker(job):
    """Fake per-node work for the pool: SIGKILLs its worker where the job says so (once, or every time)."""
    import os
    import signal
    from pathlib import Path

    if job.die == "always" or (job.die == "once" and not Path(job.marker).exists()):
        Path(job.marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return NodeResult(job.node.key, "done")


@dataclass(frozen=True)
class _DyingJob:
    node: object
    die: str
    marker: str


def test_a_killed_pool_worker_is_retried_then_reported_and_siblings_finish(with_boom, tmp_path):
    cfg = boom_config({"cache": "unused", "uri": "unused", "artifacts": "unused"})
    the_plan = plan(cfg, stages.REGISTRY, TASKS)
    boom = sorted((n for n in the_plan.nodes.values() if n.stage == "boom"), key=lambda n: n.params["fail"])
    fate = {boom[0].key: "always", boom[1].key: "once"}  # one branch always dies, the other dies once

    def job(node):
        return _DyingJob(node, fate.get(node.key, "never"), str(tmp_path / f"{node.key}.died"))

    results = execute(the_plan, job, lambda n: None, lambda n, r: None, workers=2, compute_fn=_dies_in_worker)
    assert len(results) == len(the_plan.nodes)
    assert results[boom[0].key].status == FAILED
    assert "died 2 times (killed by a signal" in results[boom[0].key].error
    assert all(results[n.key].status == SKIPPED for n in the_plan.descendants(boom[0].key))
    # the branch whose worker died once was resubmitted and finished, with all of its subtree
    assert all(results[n.key].status == "done" for n in [boom[1], *the_plan.descendants(boom[1].key)])


@dataclass
class HogParams:
    gib: int = 0


class Hog(Stage):
    """Asks torch for `gib` GiB at once (0: passes the model through)."""

    name, version, consumes, produces, Params = "hog", "1", TORCH, TORCH, HogParams

    def run(self, ctx, model):
        import torch

        if self.params.gib:
            torch.empty(self.params.gib * 2**30, dtype=torch.uint8)  # a real failed allocation, not a fake
        return StageOutput(model)


def test_out_of_memory_is_reported_as_such_and_siblings_finish(monkeypatch, store):
    monkeypatch.setitem(stages.REGISTRY, "hog", Hog)
    cfg = boom_config(store)
    cfg["stages"]["hog"] = {"gib": 0}
    cfg["pipeline"] = ["hog", "quantize"]
    cfg["sweep"] = {"stages.hog.gib": [0, 2**17], "stages.quantize.mode": ["int8"]}  # 128 TiB cannot be had
    assert run_sweep(cfg, "hogtest") == 1
    client = MlflowClient(store["uri"])
    runs = client.search_runs([client.get_experiment_by_name("hogtest").experiment_id])
    failed = [r for r in runs if r.data.tags.get("orchestrator.status") == "failed"]
    assert len(failed) == 1 and failed[0].data.tags["orchestrator.stage"] == "hog"
    text = open(client.download_artifacts(failed[0].info.run_id, "traceback.txt")).read()
    assert text.startswith("out of memory in hog: this node failed, its siblings go on")
    leaves = [r for r in runs if r.data.tags.get("orchestrator.leaf") == "true"]
    assert [r.data.tags["orchestrator.status"] for r in leaves].count("done") == 1  # the sibling got to its leaf


def test_an_export_of_the_very_file_its_parent_was_measured_on_is_not_measured_again(store):
    """pipeline=[quantize] inserts an export below the torch baseline; its ONNX is the file the baseline's
    measurement exported, byte for byte, so its numbers are the baseline's, taken once."""
    import json
    from pathlib import Path

    from conftest import run_cli

    done = run_cli(store, "pipeline=[quantize]", "tracking.enabled=false")
    assert done.returncode == 0, done.stderr[-2000:]
    metas = {m["stage"]: (m, folder) for folder in Path(store["cache"], "nodes").iterdir()
             for m in [json.loads((folder / "meta.json").read_text())]}
    export, folder = metas["export"]
    base_folder = metas["baseline"][1]
    evals = {f.name: json.loads(f.read_text()) for f in (folder / "eval").glob("*.json")}
    base_evals = {f.name: json.loads(f.read_text()) for f in (base_folder / "eval").glob("*.json")}
    (name, own), = evals.items()
    assert own["latency_p50_ms"] == base_evals[name]["latency_p50_ms"]  # reused, not re-timed
    assert export["measure_seconds"] < 1.0 < metas["baseline"][0]["measure_seconds"]
