"""Team tracking: a real `mlflow server` on a real PostgreSQL with proxied artifacts (orchestrator.teamserver).

Two sweeps from two processes land as two parent runs with complete children; a fresh client folder sees
the runs, the logged models and the registered model through the server alone (no shared disk). Two searches
started with the same command share one study in the server's PostgreSQL.
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
        with team_server(folder, free_port(), free_port()) as (uri, studies):
            yield uri, folder, studies
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
    uri, folder, _ = server
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


def test_two_searches_share_one_study_in_the_team_postgres(server, tmp_path):
    import optuna
    from optuna.trial import TrialState

    uri, _, studies = server
    assert studies.startswith("postgresql+psycopg://search@")  # no password in the config MLflow logs
    store = {"cache": str(tmp_path / "cache"), "uri": uri, "artifacts": str(tmp_path / "no-local-artifacts")}
    command = cli_args(store, "task=digits", "orderings=[[prune,quantize],[quantize]]",
                       "++sweep={stages.prune.ratio: [0.2, 0.4, 0.6], stages.quantize.mode: [int8, fp16]}",
                       "search.strategy=optuna", "search.trials=4", "search.sampler=random", "search.seed=0",
                       f"search.storage={studies}", "tracking.log_models=false", "tracking.experiment=team-search")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]  # the same command on two "machines" (one cache dir)
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outs]
    (summary,) = optuna.get_all_study_summaries(studies)
    trials = optuna.load_study(study_name=summary.study_name, storage=studies).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # one budget for both: each asks only while finished + running < 4, so at most one trial more (a race)
    assert 4 <= len(complete) <= 5 and len(trials) == len(complete), [(t.number, t.state) for t in trials]
    owners = {t.user_attrs["owner"] for t in complete}
    assert {int(o.rpartition(":")[2]) for o in owners} == {p.pid for p in procs}  # both computed trials of it
