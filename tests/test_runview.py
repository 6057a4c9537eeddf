"""Run names, ratios and descriptions as the MLflow UI shows them (pure logic, on a real plan)."""

from __future__ import annotations

from conftest import compose

from orchestrator.engine.plan import plan
from orchestrator.stages import REGISTRY
from orchestrator.tasks import TASKS
from orchestrator.tracking import runview


def test_names_put_the_swept_values_first_and_read_as_steps():
    p = plan(compose("+recipe=pkdq"), REGISTRY, TASKS)
    names = {runview.names(p, n)[0] for n in p.nodes.values()}
    assert {"0.3·int8 · P>KD>Q", "0.5·fp16 · P>KD>Q", "step: P (0.3)", "step: P>KD (0.5)",
            "step: P>KD>E (0.5)", "baseline"} <= names
    assert all(len(n) <= runview.NAME_WIDTH for n in names)
    leaves = [n for n in p.nodes.values() if n.key in p.leaves()]
    assert {runview.names(p, n)[1] for n in leaves} == {v.label for v in p.variants}


def test_long_swept_values_are_cut_to_fit():
    name = runview.leaf_name(("prune", "distill", "quantize"), {"a": "x" * 30, "b": "y" * 30})
    assert len(name) <= runview.NAME_WIDTH and name.endswith("… · P>KD>Q")


def test_ratios_against_the_baseline():
    base = {"latency_p50_ms": 2.0, "model_size_mb": 10.0, "accuracy": 0.9, "browser_latency_p50_ms": 8.0}
    own = {"latency_p50_ms": 0.5, "model_size_mb": 2.5, "accuracy": 0.88, "browser_latency_p50_ms": 4.0}
    r = runview.ratios(own, base)
    assert r["speedup"] == 4.0 and r["size_ratio"] == 0.25 and abs(r["accuracy_drop"] - 0.02) < 1e-12
    assert r["browser_speedup"] == 2.0
    from orchestrator.tasks.lm.task import PERPLEXITY

    lm = runview.ratios({"perplexity": 15.0, "latency_p50_ms": 1.0}, {"perplexity": 12.0, "latency_p50_ms": 1.0},
                        PERPLEXITY)
    assert lm["perplexity_ratio"] == 1.25 and "accuracy_drop" not in lm


def test_leaf_description_says_the_chain_and_the_comparison():
    text = runview.describe_leaf([("prune", {"ratio": 0.5, "method": "structured"}), ("quantize", {"mode": "int8"})],
                                 {"latency_p50_ms": 1.0, "model_size_mb": 1.0, "accuracy": 0.95},
                                 {"latency_p50_ms": 2.0, "model_size_mb": 4.0, "accuracy": 0.96})
    assert text.startswith("**pruned (ratio=0.5, method=structured), then quantized (mode=int8)**")
    assert "2.00x faster than the baseline" in text and "4.00x smaller" in text and "1.00 points below" in text


def test_a_leaf_keeps_quality_and_size_of_each_step_only():
    kept = runview.kept_ancestor_metrics("prune", {"accuracy": 0.9, "model_size_mb": 1.0, "latency_p99_ms": 3.0})
    assert kept == {"prune/accuracy": 0.9, "prune/model_size_mb": 1.0}
    assert "baseline/latency_p50_ms" in runview.kept_ancestor_metrics("baseline", {"latency_p50_ms": 1.0})
