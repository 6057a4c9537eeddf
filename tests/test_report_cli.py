"""End to end through the CLI: the report on the parent run, tags on node runs, the gate, the report command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, copy_store, run_cli

pytestmark = pytest.mark.slow

# The session's reference pkdq sweep (conftest.REFERENCE) has report.max_accuracy_drop=0.03 and a short throughput
# run. Leaves are distill>quantize, so every variant has a baseline with the same settings: the constraint always
# admits the baseline at least.
LEAF_METRICS = {"accuracy", "f1", "teacher_agreement", "model_size_mb", "model_size_gzip_mb", "params", "sparsity",
                "load_ms", "first_inference_ms", "latency_p50_ms", "latency_p90_ms", "latency_p95_ms",
                "latency_p99_ms", "latency_mean_ms", "latency_cv", "throughput_per_s", "peak_rss_mb",
                "peak_rss_delta_mb"}


@pytest.fixture(scope="module")
def shared(pkdq_reference: tuple[dict[str, str], subprocess.CompletedProcess]) -> dict[str, str]:
    """The reference sweep's store (read only): its digits baseline is trained once and reused from the cache."""
    return pkdq_reference[0]


@pytest.fixture(scope="module")
def pkdq(pkdq_reference: tuple[dict[str, str], subprocess.CompletedProcess]) -> subprocess.CompletedProcess:
    """The reference sweep's finished CLI process (its printed report)."""
    return pkdq_reference[1]


def client(store: dict[str, str]) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store["uri"])


def sweep_runs(store: dict[str, str], experiment: str) -> tuple[Any, list[Any]]:
    """(the latest parent run, its children) read straight from the store."""
    mc = client(store)
    exp = mc.get_experiment_by_name(experiment)
    runs = mc.search_runs([exp.experiment_id], max_results=1000)
    parents = sorted((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)
    parent = parents[-1]
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def printed_report(stdout: str) -> str:
    """The table, legend and recommendation block as printed (from the header line to the Why/Binding lines)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("variant "))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(("Why:", "Binding:", "No single")))
    return "\n".join(lines[start:end + 1])


def test_pkdq_logs_the_report_and_tags_the_pareto_front_and_the_pick(pkdq: Any, shared: dict[str, str]) -> None:
    parent, children = sweep_runs(shared, "pkdq")
    artifacts = {a.path for a in client(shared).list_artifacts(parent.info.run_id)}
    assert {"pareto_latency.png", "pareto_size.png", "report.md", "config.yaml"} <= artifacts
    for png in ("pareto_latency.png", "pareto_size.png"):
        path = Path(client(shared).download_artifacts(parent.info.run_id, png))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    for tag in ("orchestrator.env.threads", "orchestrator.env.onnxruntime", "orchestrator.env.cpu"):
        assert parent.data.tags[tag]
    assert parent.data.params["report.max_loss"] == "0.03"

    leaves = [r for r in children if r.data.tags["orchestrator.leaf"] == "true"]
    base = next(r for r in children if r.data.tags["orchestrator.stage"] == "baseline")
    assert len(leaves) == 4
    for run in [*leaves, base]:
        assert LEAF_METRICS <= set(run.data.metrics), LEAF_METRICS - set(run.data.metrics)
        assert run.data.tags["orchestrator.env.threads"] == "1"
    assert base.data.metrics["teacher_agreement"] == 1.0
    assert any(r.data.tags.get("orchestrator.pareto") == "true" for r in [*leaves, base])

    # the recommendation, by hand: fastest p50 among baseline + leaves losing at most 0.03 accuracy
    ok = [r for r in [*leaves, base]
          if base.data.metrics["accuracy"] - r.data.metrics["accuracy"] <= 0.03 + 1e-9]
    by_hand = min(ok, key=lambda r: r.data.metrics["latency_p50_ms"])
    tagged = [r for r in [*leaves, base] if r.data.tags.get("orchestrator.recommended") == "true"]
    assert [r.info.run_id for r in tagged] == [by_hand.info.run_id]
    label = "baseline" if by_hand is base else by_hand.data.tags["orchestrator.variant"]
    assert f"Recommended: {label}:" in pkdq.stdout
    assert parent.data.tags["orchestrator.recommended_variant"] == label


def test_report_command_rebuilds_the_same_report_from_mlflow(pkdq: Any, shared: dict[str, str],
                                                             tmp_path: Path) -> None:
    parent, _ = sweep_runs(shared, "pkdq")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for ref in (parent.info.run_id, "pkdq"):  # a parent run id, or the experiment's latest sweep
        out = tmp_path / ref
        done = subprocess.run([sys.executable, "-m", "orchestrator.report", ref, "--tracking-uri", shared["uri"],
                               "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert printed_report(done.stdout) == printed_report(pkdq.stdout)
        assert (out / "pareto_latency.png").is_file() and (out / "pareto_size.png").is_file()
        assert (out / "report.md").read_text().startswith("# pkdq: trade-off report")


def test_report_command_names_what_it_cannot_find(shared: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "orchestrator.report", "no-such-sweep", "--tracking-uri",
                           shared["uri"]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no-such-sweep" in done.stderr


def test_gate_logs_the_gated_node_and_skips_its_subtree(shared: dict[str, str], tmp_path: Path) -> None:
    shared = copy_store(shared, tmp_path / "copy")  # it logs another experiment: into a copy of the reference
    done = run_cli(shared, "pipeline=[prune,quantize]", "stages.prune.ratio=0.8", "gate.max_accuracy_drop=0.01",
                   "tracking.experiment=gate", "eval.throughput_repeats=5")  # as pkdq: its baseline numbers reused
    assert done.returncode == 0, done.stderr[-3000:]  # gated is not a failure
    _, children = sweep_runs(shared, "gate")
    by_stage = {r.data.tags["orchestrator.stage"]: r for r in children}
    gated = by_stage["prune"]
    assert gated.data.tags["orchestrator.status"] == "gated" and gated.info.status == "FINISHED"
    assert "accuracy" in gated.data.metrics and "latency_p50_ms" in gated.data.metrics
    assert "gated.txt" in {a.path for a in client(shared).list_artifacts(gated.info.run_id)}
    for stage in ("export", "quantize"):
        assert by_stage[stage].data.tags["orchestrator.status"] == "skipped"
        assert by_stage[stage].info.status == "KILLED"
    assert "1 gated, 2 skipped" in done.stdout


def test_bad_report_constraint_stops_before_compute(shared: dict[str, str]) -> None:
    done = run_cli(shared, "+recipe=pkdq", "report.max_latency_ms=0")
    assert done.returncode == 2
    assert "report.max_latency_ms" in done.stderr
