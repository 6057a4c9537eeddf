"""Fault injection: SIGKILL the default sweep at every phase, rerun after each kill, lose nothing.

Kill points (orchestrator/faults.py) cover baseline training, a stage, the saved-but-unmeasured model,
export, measurement, the cache commit, MLflow logging and the report. After the last rerun: the cache
holds no partial node, every finished invocation logged each leaf exactly once with the same metrics
(latency aside) as an uninterrupted run, and no MLflow run is left RUNNING.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient

from orchestrator.engine.cache import Cache

# (point, n): die the n-th time this invocation reaches the point. 11 kills across every phase.
KILLS = [("train_epoch", 3), ("build:start", 2), ("build:saved", 1), ("export:written", 1), ("measure:mid", 2),
         ("commit:meta", 1), ("commit:done", 1), ("log:open", 2), ("log:closed", 1), ("train_epoch", 5),
         ("report", 1)]
STABLE = ("accuracy", "f1", "model_size_mb", "params", "sparsity", "teacher_agreement")  # not timing-dependent


def leaf_metrics(uri: str) -> list[dict[str, dict[str, float]]]:
    """Per FINISHED parent run: {leaf variant name: stable metrics}; asserts each leaf appears once."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("pkdq")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    assert not [r for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    out = []
    for parent in (r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.info.status == "FINISHED"):
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                and r.data.tags.get("orchestrator.leaf") == "true"]
        keys = [r.data.tags["orchestrator.node_key"] for r in kids]
        assert len(keys) == len(set(keys)), "a leaf was logged twice in one invocation"
        out.append({r.info.run_name: {m: r.data.metrics[m] for m in STABLE} for r in kids})
    return out


def assert_no_partial_nodes(cache_dir: str) -> None:
    cache = Cache(cache_dir)  # opening it sweeps what dead writers left
    assert not any((Path(cache_dir) / "tmp").iterdir())
    for folder in (Path(cache_dir) / "nodes").iterdir():
        assert cache.has(folder.name), f"{folder.name}: {cache.problem(folder.name)}"
        assert not [p for p in folder.rglob("*") if p.suffix in (".part", ".tmp")]
        meta = json.loads((folder / "meta.json").read_text())
        assert (folder / meta["model_file"]).is_file()


@pytest.mark.slow
def test_kill_anywhere_then_rerun_gives_the_uninterrupted_result(tmp_path: Path, pkdq_reference) -> None:
    # the uninterrupted run: the session's reference pkdq sweep (its report and measurement-repeat settings
    # differ from the runs below, which no STABLE metric depends on)
    [reference] = leaf_metrics(pkdq_reference[0]["uri"])
    assert len(reference) == 4

    store = {"cache": str(tmp_path / "c2"), "uri": f"sqlite:///{tmp_path / 'm2.db'}", "artifacts": str(tmp_path / "a2")}
    killed = 0
    for point, nth in KILLS:
        os.environ["ORCHESTRATOR_FAULT"] = f"{point}:{nth}"
        try:
            out = run_cli(store, "+recipe=pkdq")
        finally:
            del os.environ["ORCHESTRATOR_FAULT"]
        # a point the resumed sweep no longer reaches (its work is done) just lets it finish
        assert out.returncode in (-signal.SIGKILL, 0), out.stderr[-3000:]
        killed += out.returncode == -signal.SIGKILL
        assert_no_partial_nodes(store["cache"])
    assert killed >= 10
    final = run_cli(store, "+recipe=pkdq")
    assert final.returncode == 0, final.stderr[-3000:]
    assert "0 stage executions" in final.stdout  # everything was already computed and committed
    assert_no_partial_nodes(store["cache"])
    finished = leaf_metrics(store["uri"])
    assert finished, "no invocation finished"
    for sweep in finished:
        assert sweep == reference
