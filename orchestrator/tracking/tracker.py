"""Writes a sweep's runs to MLflow (through MlflowClient; `models` logs and registers the node's models for it,
`readback` reads a sweep back).

Layout: one experiment per recipe; one parent run per invocation; one child run per DAG node. Every
node run carries its whole chain: the params of every stage from the baseline down (`prune.ratio`),
the metrics of every ancestor (`prune/accuracy`), and the tags below, so a leaf run explains itself.
The trade-off report goes on the parent (plots, tables, constraints as params) and tags the node runs
(`orchestrator.pareto`, `orchestrator.recommended`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator import faults
from orchestrator.engine.plan import Node, Plan
from orchestrator.measure import targets
from orchestrator.stages.base import REPORT_DIR
from orchestrator.tasks.quality import ACCURACY, Quality
from orchestrator.tracking import models, runview
from orchestrator.tracking.models import NODE_KEY

PIPELINE, CACHED = "orchestrator.pipeline", "orchestrator.cached"
STATUS, LEAF, PARENT = "orchestrator.status", "orchestrator.leaf", "mlflow.parentRunId"
SWEEP_PID, SWEEP_HOST = "orchestrator.sweep_pid", "orchestrator.sweep_host"
PARETO, RECOMMENDED, RECIPE = "orchestrator.pareto", "orchestrator.recommended", "orchestrator.recipe"
TRIAL = "orchestrator.trial"  # a search's leaf: the number of the trial it answers; its params say what was sampled
VARIANT, NOTE = "orchestrator.variant", "mlflow.note.content"  # the full variant label; the run's description
MLFLOW_STATUS = {"done": "FINISHED", "cached": "FINISHED", "gated": "FINISHED", "failed": "FAILED",
                 "skipped": "KILLED"}
ERROR_FILE = {"failed": "traceback.txt", "gated": "gated.txt", "skipped": "skipped.txt"}


class Tracker:
    """Logs one sweep: the parent run, then a child run per node as results arrive."""

    def __init__(self, uri: str, experiment: str, artifact_root: str, log_models: bool = True) -> None:
        # MLflow's HTTP client retries for minutes by default; a store that goes away mid-sweep must cost
        # seconds (the sweep goes on and logs later), so keep its retries short unless the user set them.
        for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
            os.environ.setdefault(name, value)
        from mlflow.tracking import MlflowClient

        self.uri, self.log_models = uri, log_models
        # Two sweeps starting at once on a new SQLite store would both create its tables (and the
        # experiment) and one would fail: serialise that first contact through a lock file beside it.
        with _store_lock(uri):
            self.client = MlflowClient(tracking_uri=uri)
            self.client.search_experiments(max_results=1)  # the store's tables exist from here on
            found = self.client.get_experiment_by_name(experiment)
            if found is None:  # a server keeps the artifacts itself (proxied): clients need no shared disk
                served = uri.startswith(("http://", "https://"))
                location = None if served else (Path(artifact_root).resolve() / experiment).as_uri()
                self.experiment_id = self._create_experiment(experiment, location)
            else:
                self.experiment_id = found.experiment_id
        self.parent_id: str | None = None
        self._all_experiments: list[str] | None = None
        self.node_tags: dict[str, str] = {}  # set on every node run too (e.g. the measuring environment)
        self.runs: dict[str, str] = {}  # node key -> its run in this sweep
        self.models: dict[str, str] = {}  # node key -> its logged model (this sweep's or an earlier copy)
        self.quality = ACCURACY  # the task's quality contract: its loss metric and what a run keeps of it
        self.trials: dict[str, tuple[int, dict[str, str]]] = {}  # a search's leaf -> (its trial, sampled values)

    def _create_experiment(self, name: str, location: str | None) -> str:
        """Create `name`; a sweep that started at the same moment on a server may have created it first."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    def start_sweep(self, name: str, config_yaml: str, tags: dict[str, str],
                    node_tags: dict[str, str] | None = None) -> str:
        """Create the parent run and attach the resolved config; `node_tags` also go on every node run."""
        self._close_orphans()
        self.node_tags = dict(node_tags or {})
        run = self.client.create_run(self.experiment_id, run_name=name, tags={
            **tags, SWEEP_PID: str(os.getpid()), SWEEP_HOST: socket.gethostname()})
        self.parent_id = run.info.run_id
        self._log_text(self.parent_id, config_yaml, "config.yaml")
        return self.parent_id

    def log_node(self, plan: Plan, node: Node, result: Any, results: dict[str, Any]) -> str:
        """One child run for `node`: chain params, own metrics + ratios + what explains it of its ancestors,
        tags, its description (leaves), model, traceback. See orchestrator.tracking.runview for the choices."""
        from mlflow.entities import Metric, Param

        leaf = node.key in plan.leaves()
        name, variant = runview.names(plan, node)
        chain = plan.ancestors(node.key)
        own, base = dict(result.metrics), dict(getattr(results.get(chain[0].key), "metrics", {}) or {})
        tags = {**self.node_tags, PARENT: self.parent_id, PIPELINE: node.pipeline, NODE_KEY: node.key,
                CACHED: str(not result.executed and result.status in ("cached", "gated")).lower(),
                STATUS: result.status, LEAF: str(leaf).lower(), "orchestrator.stage": node.stage}
        if variant:
            tags[VARIANT] = variant
        if getattr(result, "onnx_path", None):  # which format it is and which runtime measured it
            fmt = targets.format_of(Path(result.onnx_path))
            tags.update({"orchestrator.format": fmt, "orchestrator.runtime": targets.measuring(fmt).label})
        trial, sampled = self.trials.get(node.key, (None, {}))
        if trial is not None:
            tags[TRIAL] = str(trial)
        if getattr(result, "worker", ""):
            tags["orchestrator.worker"] = result.worker  # where it ran (Ray: node address / id, pid)
        if leaf and own and node.parent is not None:
            steps = [(a.stage, a.params) for a in chain[1:] if not a.auto or a.tail]
            tags[NOTE] = runview.describe_leaf(steps, own, base, self.quality)
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        rid = run.info.run_id
        self.runs[node.key] = rid
        faults.point("log:open")
        params = [Param(k, v[:6000]) for k, v in {**runview.chain_params(plan, node.key), **sampled}.items()]
        shown, everything = self._chain_metrics(plan, node, results, self.quality)
        if node.parent is not None and own:  # rounded: readable in the UI
            shown.update({k: round(v, 4) for k, v in runview.ratios(own, base, self.quality).items()})
        metrics = [Metric(k, float(v), 0, 0) for k, v in shown.items()]
        self.client.log_batch(rid, metrics=metrics, params=params)
        self._log_text(rid, json.dumps({"key": node.key, "pipeline": node.pipeline, "status": result.status,
                                        "chain": [a.key for a in chain]}, indent=2), "node.json")
        self._log_text(rid, json.dumps(everything, indent=2, sort_keys=True), "chain_metrics.json")
        report = Path(result.onnx_path).parent / REPORT_DIR if getattr(result, "onnx_path", None) else None
        if report is not None and report.is_dir():  # tables and charts the stage wrote beside its model
            self.client.log_artifacts(rid, str(report), REPORT_DIR)
        if result.error:
            self._log_text(rid, result.error, ERROR_FILE.get(result.status, "error.txt"))
        for target, why in getattr(result, "target_errors", {}).items():  # that target only: the rest stands
            self._log_text(rid, why, f"{target}_error.txt")
            self.client.set_tag(rid, f"orchestrator.{target}.error", why[:500])
        if self.log_models and result.onnx_path:
            self.models[node.key] = models.log_once(self.client, self.experiment_id, self._experiment_ids, rid,
                                                    node.key, result)
        self.client.set_terminated(rid, MLFLOW_STATUS[result.status])
        faults.point("log:closed")
        return rid

    def _experiment_ids(self) -> list[str]:
        """Every experiment of the store (a node may have been computed under another recipe); listed once."""
        if self._all_experiments is None:
            self._all_experiments = [e.experiment_id for e in self.client.search_experiments()]
        return self._all_experiments

    def register(self, name: str, key: str, tags: dict[str, str]) -> str:
        """Register node `key`'s logged model (of this sweep) as a new version of `name`; returns the version."""
        # log_models is required by report.register (config.py)
        return models.register(self.client, self.uri, name, self.models[key], self.runs[key], tags)

    def log_report(self, params: dict[str, str], files: dict[str, str], images: list[Path],
                   node_tags: dict[str, dict[str, str]], tags: dict[str, str]) -> None:
        """The report on the parent run (params, text files, images, tags) and its tags on node runs by key."""
        from mlflow.entities import Param, RunTag

        self.client.log_batch(self.parent_id, params=[Param(k, v) for k, v in params.items()],
                              tags=[RunTag(k, v) for k, v in tags.items()])
        for name, text in files.items():
            self._log_text(self.parent_id, text, name)
        for image in images:
            self.client.log_artifact(self.parent_id, str(image))
        for key, node_run_tags in node_tags.items():
            if key in self.runs:
                self.client.log_batch(self.runs[key], tags=[RunTag(k, v) for k, v in node_run_tags.items()])

    def end_sweep(self, status: str, metrics: dict[str, float], files: dict[str, str]) -> None:
        """Summary metrics and text artifacts on the parent run, then close it."""
        from mlflow.entities import Metric

        self.client.log_batch(self.parent_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
        for name, text in files.items():
            self._log_text(self.parent_id, text, name)
        self.client.set_terminated(self.parent_id, status)

    @staticmethod
    def _chain_metrics(plan: Plan, node: Node, results: dict[str, Any],
                       quality: Quality) -> tuple[dict[str, float], dict[str, Any]]:
        """(what the run shows: own metrics unprefixed + the kept ancestor metrics as `<stage>/<metric>`,
        every ancestor's metrics by step for the chain_metrics.json artifact)."""
        shown: dict[str, float] = {}
        everything: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for anc in plan.ancestors(node.key):
            name = runview.numbered(anc.stage, seen) if anc.stage != "baseline" else "baseline"
            res = results.get(anc.key)
            if res is None:
                continue
            everything[name] = dict(res.metrics)
            if anc.key == node.key:
                shown.update(res.metrics)
            else:
                shown.update(runview.kept_ancestor_metrics(name, res.metrics, quality))
        return shown, everything

    def _log_text(self, run_id: str, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text)
            self.client.log_artifact(run_id, str(path))

    def _close_orphans(self) -> None:
        """Mark runs left RUNNING by a killed sweep on this host as KILLED, so the UI doesn't show them live."""
        from mlflow.entities import ViewType

        from orchestrator.engine.cache.local import _pid_alive

        runs = self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'",
                                       run_view_type=ViewType.ACTIVE_ONLY, max_results=1000)
        dead = set()
        for run in runs:
            pid, host = run.data.tags.get(SWEEP_PID), run.data.tags.get(SWEEP_HOST)
            if pid and host == socket.gethostname() and not _pid_alive(int(pid)):
                dead.add(run.info.run_id)
        # a node run the kill caught half-logged belongs to a dead sweep too
        dead |= {r.info.run_id for r in runs if r.data.tags.get(PARENT) in dead}
        for run_id in dead:
            self.client.set_terminated(run_id, "KILLED")


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An inter-process lock beside a SQLite store (creating its folder, which SQLite won't); no-op otherwise."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):]).expanduser()
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / f".{db.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
