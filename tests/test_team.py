"""Team tracking: a real `mlflow server` on a real PostgreSQL with proxied artifacts (orchestrator.teamserver).

Two sweeps from two processes land as two parent runs with complete children; a fresh client folder sees
the runs, the logged models and the registered model through the server alone (no shared disk).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, cli_args, free_port

from orchestrator.teamserver import team_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    folder = Path(tempfile.mkdtemp(prefix="orchestrator-team-"))  # in /tmp: the postgres user must reach it
    folder.chmod(0o755)
    try:
        with team_server(folder, free_port(), free_port()) as uri:
            yield uri, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


FRESH_CLIENT = textwrap.dedent("""
    import json, sys
    import mlflow
    from mlflow.tracking import MlflowClient
    from orchestrator.tasks.digits import Digits, DigitsParams

    client = MlflowClient()
    exp = client.get_experiment_by_name("pkdq")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    kids = {p.info.run_id: [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
            for p in parents}
    models = client.search_logged_models([exp.experiment_id], max_results=1000)
    versions = client.search_model_versions("name = 'digits-team'")
    feeds, labels = next(Digits(DigitsParams(epochs=1, width=32, hidden=128), 0).onnx_batches("test", 64))
    acc = {}
    for uri in ["models:/digits-team/1", "models:/" + models[0].model_id]:
        out = mlflow.pyfunc.load_model(uri).predict(feeds)
        acc[uri] = float((next(iter(out.values())).argmax(-1) == labels).mean())
    print(json.dumps({
        "parents": [p.info.status for p in parents],
        "children": {pid: sorted((r.info.status, r.data.tags["orchestrator.status"]) for r in rs)
                     for pid, rs in kids.items()},
        "artifact_uri": exp.artifact_location, "models": len(models), "versions": len(versions),
        "accuracy": acc}))
""")


def test_two_sweeps_into_one_postgres_server_seen_from_a_fresh_client(server, tmp_path):
    uri, folder = server
    store = {"cache": str(tmp_path / "cache"), "uri": uri, "artifacts": str(tmp_path / "no-local-artifacts")}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen(cli_args(store, "+recipe=pkdq", "report.register=digits-team", f"seed={seed}"),
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for seed in (0, 1)]  # two seeds: two different sets of models, both computed at once
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outs]
    assert not Path(store["artifacts"]).exists()  # every artifact went through the server
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    client_env = {**env, "MLFLOW_TRACKING_URI": uri}
    out = subprocess.run([sys.executable, "-c", FRESH_CLIENT], cwd=fresh, env=client_env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["parents"] == ["FINISHED", "FINISHED"]
    assert [len(c) for c in seen["children"].values()] == [11, 11]
    assert all(status == ["FINISHED", "done"] for c in seen["children"].values() for status in c), seen["children"]
    assert seen["artifact_uri"].startswith("mlflow-artifacts:")
    assert seen["models"] == 22 and seen["versions"] == 2
    assert all(a > 0.8 for a in seen["accuracy"].values()), seen["accuracy"]
    assert any((folder / "artifacts").rglob("model.onnx"))  # the server's own artifact store holds them
