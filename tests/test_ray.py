"""executor=ray on a real two-node Ray cluster on this machine (`ray start --head`, then a second node).

The cluster's processes get no PYTHONPATH: a user's task reaches the workers only through the job's
runtime_env. Token authentication is on, as `ray start --head` sets it up by default; the cluster gets a
token file of its own in a temporary folder (RAY_AUTH_TOKEN_PATH), never the one in the home.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, cli_args, free_port, run_cli
from mlflow.tracking import MlflowClient

from orchestrator import stages
from orchestrator.engine.execute import execute
from orchestrator.engine.executors import executor_for
from orchestrator.engine.executors.base import FAILED, SKIPPED, NodeResult
from orchestrator.engine.plan import plan
from orchestrator.tasks import TASKS

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head + one worker node, one CPU each; yields the environment a driver needs to join it (its token included)."""
    token = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_AUTH_TOKEN")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    port = free_port()
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                    "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=120)
    try:
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=120)
        yield {**env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    finally:
        _stop_cluster(port)


def _stop_cluster(port: int) -> None:
    """SIGKILL this cluster's processes only (`ray stop` would stop every Ray on the machine): find its GCS by
    the port, then every process naming the GCS's session folder, and their children (the workers)."""
    cmdlines = {}
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdlines[int(proc.name)] = (ppid, args)
    sessions = {m.group(0) for _, args in cmdlines.values() if f"--gcs_server_port={port}" in args
                for m in [re.search(r"/session_[\w.-]+", args)] if m}
    doomed = {pid for pid, (_, args) in cmdlines.items() if any(s in args for s in sessions)}
    while more := {pid for pid, (ppid, _) in cmdlines.items() if ppid in doomed} - doomed:
        doomed |= more
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _leaves(uri: str) -> dict[str, dict]:
    """Variant -> (metrics, worker) of the newest sweep's leaf runs."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("pkdq")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return {r.data.tags.get("orchestrator.variant", r.data.tags["orchestrator.pipeline"]): r for r in kids
            if r.data.tags.get("orchestrator.leaf") == "true"}, kids


def _kill_a_running_node(proc: subprocess.Popen, stage: str, timeout: float = 300) -> str:
    """SIGKILL the first Ray worker seen computing a node of `stage` (its process title is ray::<stage>:<key>)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        for line in ps.splitlines():
            pid, _, args = line.strip().partition(" ")
            if args.startswith(f"ray::{stage}:"):
                os.kill(int(pid), signal.SIGKILL)
                return args
        time.sleep(0.1)
    raise AssertionError(f"no Ray worker computing {stage} was seen")


def test_sweep_on_two_nodes_matches_local_and_survives_a_killed_worker(cluster, tmp_path):
    local = {"cache": str(tmp_path / "lc"), "uri": f"sqlite:///{tmp_path / 'l.db'}", "artifacts": str(tmp_path / "la")}
    out = run_cli(local, "+recipe=pkdq", "tracking.log_models=false")
    assert out.returncode == 0, out.stderr
    store = {"cache": str(tmp_path / "rc"), "uri": f"sqlite:///{tmp_path / 'r.db'}", "artifacts": str(tmp_path / "ra")}
    proc = subprocess.Popen(cli_args(store, "+recipe=pkdq", "tracking.log_models=false", "executor=ray",
                                     "executor.address=auto"), cwd=ROOT, env=cluster, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killed = _kill_a_running_node(proc, "distill")
    text = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, text[-4000:]
    # every node computed exactly once (the killed attempt committed nothing), nothing failed
    assert "11 unique nodes: 11 stage executions, 0 from cache, 0 failed" in text, (killed, text[-3000:])
    assert len(list((Path(store["cache"]) / "nodes").iterdir())) == 11
    ray_leaves, kids = _leaves(store["uri"])
    workers = {re.match(r"[\d.]+/(\w+)", r.data.tags["orchestrator.worker"]).group(1) for r in kids}
    assert len(workers) == 2, workers  # both nodes of the cluster computed nodes
    local_leaves, _ = _leaves(local["uri"])
    assert set(ray_leaves) == set(local_leaves)
    for name, run in local_leaves.items():  # the same models: every metric but timing agrees
        for metric in ("accuracy", "agreement", "model_size_mb", "params"):
            if metric in run.data.metrics:
                assert ray_leaves[name].data.metrics[metric] == pytest.approx(run.data.metrics[metric]), (name, metric)


def test_a_user_task_reaches_the_workers_through_the_runtime_env(cluster, tmp_path):
    examples = ROOT / "examples"
    env = {**cluster, "ORCHESTRATOR_PLUGINS": "wine_task", "PYTHONPATH": str(examples),
           "ORCHESTRATOR_CONFIG_PATH": str(examples / "conf")}
    cmd = [sys.executable, "-m", "orchestrator", "+recipe=pkdq", "task=wine", "executor=ray",
           "executor.address=auto", f"cache.dir={tmp_path / 'cache'}", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}",
           f"tracking.artifact_root={tmp_path / 'art'}", "eval.repeats=20", "eval.warmup=2",
           "stages.distill.epochs=2", "task.epochs=30", "stages.distill.resources.num_cpus=1"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "11 unique nodes: 11 stage executions" in out.stdout and " 0 failed" in out.stdout


@pytest.mark.parametrize("stage, request_", [("distill", "num_gpus=1"), ("baseline", "num_cpus=2")])
def test_requests_the_cluster_cannot_serve_stop_before_compute(cluster, tmp_path, stage, request_):
    store = {"cache": str(tmp_path / "c"), "uri": f"sqlite:///{tmp_path / 'm.db'}", "artifacts": str(tmp_path / "a")}
    out = run_cli(store, "+recipe=pkdq", "executor=ray", "executor.address=auto",
                  f"stages.{stage}.resources.{request_}", env=cluster)
    assert out.returncode == 2, out.stderr
    assert f"stages.{stage}.resources=" in out.stderr and "no node of the Ray cluster has that much" in out.stderr
    assert "the largest has 1 CPUs, 0 GPUs" in out.stderr
    assert not (Path(store["cache"]) / "nodes").exists() or not any((Path(store["cache"]) / "nodes").iterdir())


@pytest.mark.parametrize("override, says", [
    (["executor.address=127.0.0.1:1"], "executor.address='127.0.0.1:1' is not allowed: nothing answers"),
    (["executor.address=not an address"], "must be auto, host:port or ray://host:port"),
    (["stages.distill.resources.gpus=1"], "stages.distill.resources.gpus='1' is not allowed: unknown key 'gpus' "
                                          "under stages.distill.resources; allowed there: num_cpus, num_gpus, "
                                          "memory_gb"),
    (["stages.prune.resources.num_cpus=0"], "stages.prune.resources.num_cpus=0.0 is not allowed: must be in (0, "),
    (["executor.kind=dask"], "executor.kind='dask' is not allowed: must be one of local, pool, ray"),
])
def test_bad_executor_settings_exit_2_fast(tmp_path, override, says):
    store = {"cache": str(tmp_path / "c"), "uri": f"sqlite:///{tmp_path / 'm.db'}", "artifacts": str(tmp_path / "a")}
    kind = [] if any(o.startswith("executor.kind") for o in override) else ["executor=ray"]
    start = time.perf_counter()
    out = run_cli(store, "+recipe=pkdq", *kind, *override)
    assert out.returncode == 2 and says in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and time.perf_counter() - start < 60


def test_a_driver_without_the_token_is_told_how_to_get_it(cluster, tmp_path):
    """A fresh home and no RAY_AUTH_* variables: the refusal names token authentication and what to set."""
    env = {k: v for k, v in cluster.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path / "home")
    store = {"cache": str(tmp_path / "c"), "uri": f"sqlite:///{tmp_path / 'm.db'}", "artifacts": str(tmp_path / "a")}
    start = time.perf_counter()
    out = run_cli(store, "+recipe=pkdq", "executor=ray", "executor.address=auto", env=env, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.splitlines()[-1]
    assert "token authentication" in last and "RAY_AUTH_MODE=token" in last, out.stderr[-2000:]
    assert "RAY_AUTH_TOKEN_PATH" in out.stderr and "Traceback" not in out.stderr
    assert time.perf_counter() - start < 60


@dataclass(frozen=True)
class _DyingJob:
    node: object
    die: str
    marker: str


def _dies_on_ray(job):
    """Fake per-node work: SIGKILLs its Ray worker where the job says so (once, or every time)."""
    if job.die == "always" or (job.die == "once" and not Path(job.marker).exists()):
        Path(job.marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    if job.die == "fail":
        return NodeResult(job.node.key, FAILED, error="injected")
    return NodeResult(job.node.key, "done")


def test_ray_scheduling_retries_dead_workers_and_skips_failed_subtrees(cluster, tmp_path, monkeypatch):
    """The scheduling alone (fake work): a branch whose worker always dies is reported failed after the
    retries, one that dies once finishes, a failed node's subtree is skipped, every node gets one result."""
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):  # (read when ray is imported)
        monkeypatch.setenv(name, cluster[name])
    from ray import cloudpickle  # Ray serializes with its own copy
    from test_execute import Boom, boom_config

    monkeypatch.setitem(stages.REGISTRY, "boom", Boom)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests
    the_plan = plan(boom_config({"cache": "unused", "uri": "unused", "artifacts": "unused"}), stages.REGISTRY, TASKS)
    boom = sorted((n for n in the_plan.nodes.values() if n.stage == "boom"), key=lambda n: n.params["fail"])
    distill = [n for n in the_plan.nodes.values() if n.stage == "distill" and n.parent == boom[1].key]
    fate = {boom[0].key: "always", boom[1].key: "once", distill[0].key: "fail"}
    started = []

    def job(node):
        return _DyingJob(node, fate.get(node.key, "never"), str(tmp_path / f"{node.key}.died"))

    executor = executor_for({"kind": "ray", "address": "auto", "max_retries": 1})
    executor.prepare({})
    try:
        results = execute(the_plan, job, lambda n, where: started.append((n.key, where)), lambda n, r: None,
                          compute_fn=_dies_on_ray, executor=executor)
    finally:
        executor.close()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert set(results) == set(the_plan.nodes)
    assert results[boom[0].key].status == FAILED, results[the_plan.children(None)[0].key].error
    assert "died 2 times" in results[boom[0].key].error
    assert all(results[n.key].status == SKIPPED for n in the_plan.descendants(boom[0].key))
    assert results[boom[1].key].status == "done"  # its worker died once: Ray retried it
    assert results[distill[0].key].status == FAILED
    assert all(results[n.key].status == SKIPPED for n in the_plan.descendants(distill[0].key))
    assert all(where and " pid " in where for _, where in started)
