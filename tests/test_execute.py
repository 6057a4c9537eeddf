"""The executor's own logic with a fake stage (failure isolation, skipping), tracked in a real MLflow store."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from conftest import compose
from mlflow.tracking import MlflowClient

from orchestrator import stages
from orchestrator.execute import FAILED, SKIPPED, NodeResult, execute
from orchestrator.plan import plan
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
