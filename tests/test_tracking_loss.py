"""A real `mlflow server` that dies mid-sweep: computing goes on, the command says what was not logged,
and a rerun against the restarted server logs every node from the cache without recomputing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, cli_args, free_port
from mlflow.tracking import MlflowClient

from orchestrator.teamserver import SERVER_ENV


def start_server(db: Path, artifacts: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{db}", "--default-artifact-root", str(artifacts), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, **SERVER_ENV})
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError("mlflow server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the server and its workers: a crash, not a clean shutdown
    proc.wait(30)


@pytest.mark.slow
def test_server_lost_mid_sweep_then_rerun_logs_everything(tmp_path: Path) -> None:
    port, db = free_port(), tmp_path / "server.db"
    uri = f"http://127.0.0.1:{port}"
    store = {"cache": str(tmp_path / "cache"), "uri": uri, "artifacts": str(tmp_path / "client-art")}
    server = start_server(db, tmp_path / "server-art", port)
    sweep = subprocess.Popen(cli_args(store, "+recipe=pkdq"), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in sweep.stderr:  # wait until a few nodes were computed and logged
            if line.startswith("[  3/11]") and " done in " in line:
                break
        stop_server(server)
        start = time.perf_counter()
        rest, err = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 1
    # the rest of the sweep ran to the end with no minutes of retries per node
    assert time.perf_counter() - start < 300
    assert "11 unique nodes: " in rest and " 0 failed" in rest
    final = "\n".join(err.strip().splitlines()[-5:])
    assert "could not be logged to tracking.uri=" in final and "rerun the same command" in final

    server = start_server(db, tmp_path / "server-art", port)
    try:
        again = subprocess.run(cli_args(store, "+recipe=pkdq"), cwd=ROOT, capture_output=True, text=True,
                               timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "0 stage executions, 11 from cache" in again.stdout
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("pkdq")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        done = [p for p in parents if p.info.status == "FINISHED"]
        assert len(done) == 1
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == done[0].info.run_id]
        assert len(kids) == 11 and all(r.info.status == "FINISHED" for r in kids)
        assert not [r for r in runs if r.info.status == "RUNNING"]
    finally:
        stop_server(server)



def test_two_sweeps_registering_one_name_at_once_both_get_a_version(tmp_path: Path, monkeypatch) -> None:
    """The race two team sweeps with the same `report.register` ran into: both saw no registered model, the
    second `create_registered_model` failed with RESOURCE_ALREADY_EXISTS and its sweep reported MLflow down."""
    from orchestrator.tracking.tracker import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "race", str(tmp_path / "artifacts"))
    exp = tracker.client.get_experiment_by_name("race").experiment_id
    run = tracker.client.create_run(exp)
    model = tracker.client.create_logged_model(exp, source_run_id=run.info.run_id)
    tracker.models, tracker.runs = {"k": model.model_id}, {"k": run.info.run_id}
    MlflowClient(uri).create_registered_model("shared")  # the other sweep got there first
    monkeypatch.setattr(tracker.client, "search_registered_models", lambda *a, **k: [])  # ...after we looked
    assert tracker.register("shared", "k", {}) == "1"
    assert tracker.register("shared", "k", {}) == "2"
