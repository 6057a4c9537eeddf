"""Every recipe runs end to end on digits through the CLI (reduced sizes; full runs: benchmarks/run_recipes.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import benchmark, leaf_runs, run_cli

from orchestrator.config.schema import discover_recipes

# Fewer epochs and sweep points than the recipes ship with; `~sweep +sweep=...` replaces a recipe's sweep.
REDUCED: dict[str, list[str]] = {
    "pkdq": ["stages.distill.epochs=1", "~sweep", "+sweep={stages.prune.ratio:[0.3],stages.quantize.mode:[int8]}"],
    "ptq_int8": ["stages.quantize.calib_samples=64"],
    "fp16": [],
    "int4": [],
    "qat": ["stages.fakequant.epochs=1"],
    "qad": ["stages.distill.epochs=1"],
    "sparsity_sweep": ["stages.prune.finetune_epochs=1", "~sweep",
                       "+sweep={stages.prune.method:[structured,unstructured],stages.prune.ratio:[0.5]}"],
    "browser": ["stages.distill.epochs=1", "eval.samples=50", "eval.repeats=10", "~sweep",
                "+sweep={stages.quantize.mode:[int8,q4f16],stages.quantize.method:[dynamic]}"],
    "ordering_study": ["stages.distill.epochs=1", "~sweep",
                       "+sweep={stages.prune.ratio:[0.3],stages.quantize.mode:[int8,fp16]}"],
    "ordering_study_llm": [],  # a language-model recipe: run on a tiny tinylm in test_lm_cli.py
    "llm_deploy": [],  # likewise
    "llm_runtimes": [],  # likewise, in test_llm_runtimes.py
    "tiny_tweets": [],  # a text-encoder recipe: run on the tiny BERT in test_trim.py
    "search_tweets": [],  # likewise (a search of 3 trials)
}
# (not run on digits here)
LM_RECIPES = ("ordering_study_llm", "llm_deploy", "llm_runtimes", "tiny_tweets", "search_tweets")


def test_every_shipped_recipe_has_a_reduced_run_here() -> None:
    assert set(REDUCED) == set(discover_recipes())


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One cache and MLflow store for the recipe runs: they share the baseline."""
    tmp = tmp_path_factory.mktemp("recipes")
    return {"cache": str(tmp / "cache"), "uri": f"sqlite:///{tmp / 'mlflow.db'}", "artifacts": str(tmp / "art")}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [r for r in REDUCED if r not in ("ordering_study", *LM_RECIPES)])
def test_recipe_runs_on_digits(recipe: str, shared: dict[str, str]) -> None:
    proc = run_cli(shared, f"+recipe={recipe}", "tracking.log_models=false", *REDUCED[recipe])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert " 0 failed" in proc.stdout
    leaves = leaf_runs(shared, recipe)
    assert leaves and all({"accuracy", "model_size_mb", "latency_p50_ms"} <= set(r.data.metrics) for r in leaves)
    if recipe == "sparsity_sweep":
        unstructured = [r for r in leaves if r.data.params["prune.method"] == "unstructured"]
        assert unstructured[0].data.metrics["sparsity"] == pytest.approx(0.5, abs=0.01)
    if recipe in ("int4", "qat", "qad"):  # every quantizing leaf says how much it quantized
        assert all(r.data.metrics["quantized_params_frac"] > 0.8 for r in leaves)


def ordering_table() -> Any:
    return benchmark("ordering_table")


@pytest.mark.slow
def test_the_ordering_study_runs_as_one_dag_and_the_benchmark_reads_its_table(store: dict[str, str]) -> None:
    proc = run_cli(store, "+recipe=ordering_study", "tracking.log_models=false", *REDUCED["ordering_study"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # a fresh cache: every unique node runs exactly once, shared prefixes included
    assert "40 unique nodes: 40 stage executions, 0 from cache" in proc.stdout
    bench = ordering_table()
    rows = bench.rows(store["uri"], "ordering_study")
    # 6 orders x 2 precisions (one ratio), P, KD, Q x 2 precisions, baseline
    assert len(rows) == 12 + 1 + 1 + 2 + 1
    orders = {r["order"] for r in rows}
    assert len(orders) == 10 and {"prune>distill>quantize", "quantize>prune>distill", "baseline"} <= orders
    assert {(r["precision"], r["ratio"]) for r in rows if r["order"] == "quantize>distill>prune"} == {
        ("int8", "0.3"), ("fp16", "0.3")}
    assert all(r["accuracy"] > 0.5 and r["size MB"] > 0 and r["p50 ms"] > 0 for r in rows)
    baseline = next(r for r in rows if r["order"] == "baseline")
    assert all(r["size MB"] < 0.5 * baseline["size MB"] for r in rows if r["order"].count(">") == 2)
    assert "| order | precision | ratio |" in bench.table(rows)


def test_the_ordering_table_script_refuses_an_unknown_experiment(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no experiment"):
        ordering_table().rows(f"sqlite:///{tmp_path / 'empty.db'}", "ordering_study")
