"""The one module that talks to MLflow (through MlflowClient).

Layout: one experiment per recipe; one parent run per invocation; one child run per DAG node. Every
node run carries its whole chain: the params of every stage from the baseline down (`prune.ratio`),
the metrics of every ancestor (`prune/accuracy`), and the tags below, so a leaf run explains itself.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.plan import Node, Plan

PIPELINE, NODE_KEY, CACHED = "orchestrator.pipeline", "orchestrator.node_key", "orchestrator.cached"
STATUS, LEAF, PARENT = "orchestrator.status", "orchestrator.leaf", "mlflow.parentRunId"
SWEEP_PID, SWEEP_HOST = "orchestrator.sweep_pid", "orchestrator.sweep_host"
MLFLOW_STATUS = {"done": "FINISHED", "cached": "FINISHED", "gated": "FINISHED", "failed": "FAILED",
                 "skipped": "KILLED"}
ERROR_FILE = {"failed": "traceback.txt", "gated": "gated.txt", "skipped": "skipped.txt"}


def chain_params(plan: Plan, key: str) -> dict[str, str]:
    """Flattened params of every step down to `key`: `task.epochs`, `prune.ratio`, `quantize.mode`..."""
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    for node in plan.ancestors(key):
        name = "task" if node.stage == "baseline" else _step_name(node.stage, seen)
        for param, value in node.params.items():
            out[f"{name}.{param}"] = str(value)
    return out


def _step_name(stage: str, seen: dict[str, int]) -> str:
    """`prune`, then `prune#2` if the same stage appears again in one chain."""
    seen[stage] = seen.get(stage, 0) + 1
    return stage if seen[stage] == 1 else f"{stage}#{seen[stage]}"


class Tracker:
    """Logs one sweep: the parent run, then a child run per node as results arrive."""

    def __init__(self, uri: str, experiment: str, artifact_root: str, log_models: bool = True) -> None:
        from mlflow.tracking import MlflowClient

        _ensure_sqlite_dir(uri)
        self.client = MlflowClient(tracking_uri=uri)
        self.uri, self.log_models = uri, log_models
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = (Path(artifact_root).resolve() / experiment).as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = found.experiment_id
        self.parent_id: str | None = None

    def start_sweep(self, name: str, config_yaml: str, tags: dict[str, str]) -> str:
        """Create the parent run and attach the resolved config."""
        self._close_orphans()
        run = self.client.create_run(self.experiment_id, run_name=name, tags={
            **tags, SWEEP_PID: str(os.getpid()), SWEEP_HOST: socket.gethostname()})
        self.parent_id = run.info.run_id
        self._log_text(self.parent_id, config_yaml, "config.yaml")
        return self.parent_id

    def log_node(self, plan: Plan, node: Node, result: Any, results: dict[str, Any], label: str) -> str:
        """One child run for `node`: chain params, own + ancestors' metrics, tags, model, traceback."""
        from mlflow.entities import Metric, Param

        leaf = node.key in plan.leaves()
        run = self.client.create_run(self.experiment_id, run_name=label, tags={
            PARENT: self.parent_id, PIPELINE: node.pipeline, NODE_KEY: node.key,
            CACHED: str(not result.executed and result.status in ("cached", "gated")).lower(),
            STATUS: result.status, LEAF: str(leaf).lower(), "orchestrator.stage": node.stage})
        rid = run.info.run_id
        params = [Param(k, v[:6000]) for k, v in chain_params(plan, node.key).items()]
        metrics = [Metric(k, float(v), 0, 0) for k, v in self._chain_metrics(plan, node, results).items()]
        self.client.log_batch(rid, metrics=metrics, params=params)
        self._log_text(rid, json.dumps({"key": node.key, "pipeline": node.pipeline, "status": result.status,
                                        "chain": [a.key for a in plan.ancestors(node.key)]}, indent=2),
                       "node.json")
        if result.error:
            self._log_text(rid, result.error, ERROR_FILE.get(result.status, "error.txt"))
        if self.log_models and result.onnx_path:
            self.client.log_artifact(rid, result.onnx_path, "model")
        self.client.set_terminated(rid, MLFLOW_STATUS[result.status])
        return rid

    def end_sweep(self, status: str, metrics: dict[str, float], files: dict[str, str]) -> None:
        """Summary metrics and text artifacts on the parent run, then close it."""
        from mlflow.entities import Metric

        self.client.log_batch(self.parent_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
        for name, text in files.items():
            self._log_text(self.parent_id, text, name)
        self.client.set_terminated(self.parent_id, status)

    @staticmethod
    def _chain_metrics(plan: Plan, node: Node, results: dict[str, Any]) -> dict[str, float]:
        """The node's own metrics unprefixed; each ancestor's as `<stage>/<metric>`."""
        out: dict[str, float] = {}
        seen: dict[str, int] = {}
        for anc in plan.ancestors(node.key):
            name = _step_name(anc.stage, seen) if anc.stage != "baseline" else "baseline"
            res = results.get(anc.key)
            if res is None:
                continue
            if anc.key == node.key:
                out.update(res.metrics)
            else:
                out.update({f"{name}/{k}": v for k, v in res.metrics.items()})
        return out

    def _log_text(self, run_id: str, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text)
            self.client.log_artifact(run_id, str(path))

    def _close_orphans(self) -> None:
        """Mark runs left RUNNING by a killed sweep on this host as KILLED, so the UI doesn't show them live."""
        from mlflow.entities import ViewType

        from orchestrator.cache import _pid_alive

        runs = self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'",
                                       run_view_type=ViewType.ACTIVE_ONLY, max_results=1000)
        for run in runs:
            pid, host = run.data.tags.get(SWEEP_PID), run.data.tags.get(SWEEP_HOST)
            if pid and host == socket.gethostname() and not _pid_alive(int(pid)):
                self.client.set_terminated(run.info.run_id, "KILLED")


def _ensure_sqlite_dir(uri: str) -> None:
    """SQLite won't create the folder that holds the database file."""
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
