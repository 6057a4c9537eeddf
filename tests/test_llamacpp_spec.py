"""Speculative decoding in llama.cpp on tinylm: a GGUF drafts for the baseline written as F16 GGUF, the text is the
target's own whether the draft is right or wrong, and a sweep's GGUF leaf gets the `spec_*` metrics."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from conftest import leaf_runs, require_llamacpp, run_cli
from test_lm_cli import TINY

pytest.importorskip("transformers")
llamacpp = require_llamacpp()


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Path]]:
    """tinylm, and GGUFs of its baseline (F16, the target) and of a copy with noisy weights (a draft that is
    often wrong)."""
    import torch

    from orchestrator.artifacts import gguf_write, torch_io
    from orchestrator.tasks.lm.tinylm import TinyLM, TinyLMParams

    lm = TinyLM(TinyLMParams(vocab_size=512, hidden_size=64, layers=2, heads=4, kv_heads=2, ffn=96, context=64,
                             train_tokens=30000, eval_tokens=2048, batch_size=8), seed=0)
    base = lm.build_baseline()
    noisy = copy.deepcopy(base)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in noisy.parameters():
            if p.dim() == 2:
                p.add_(torch.randn_like(p) * p.std() * 0.7)
    tokenizer, source = lm.gguf_tokenizer()
    work = tmp_path_factory.mktemp("spec")
    paths = {"target": work / "target.gguf", "noisy": work / "noisy.gguf"}
    gguf_write.write(base, tokenizer, paths["target"], "F16", tokenizer_source=source)
    gguf_write.write(noisy, tokenizer, paths["noisy"], "F16", tokenizer_source=source)
    (work / "base").mkdir()
    torch_io.save(base, work / "base", lm)
    paths["weights"] = work / "base" / torch_io.WEIGHTS
    return lm, paths


def test_the_verifying_gguf_is_written_once_per_weights_file(ggufs: tuple[Any, dict[str, Path]],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Every GGUF draft of a sweep verifies with the same F16 target: written on the first, reused after."""
    import os

    from orchestrator.artifacts import gguf_write
    from orchestrator.tasks.lm.spec import target_gguf

    lm, paths = ggufs
    writes = []
    write = gguf_write.write
    monkeypatch.setattr(gguf_write, "write", lambda *a, **k: (writes.append(a[2]), write(*a, **k))[1])
    first = target_gguf(lm, paths["weights"])
    assert target_gguf(lm, paths["weights"]) == first and writes == [first]
    assert first.read_bytes() == paths["target"].read_bytes()  # the baseline's F16 GGUF, as written directly
    stat = paths["weights"].stat()
    os.utime(paths["weights"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # new weights: a new target
    assert target_gguf(lm, paths["weights"]) != first and len(writes) == 2


def test_the_text_is_the_targets_whether_the_draft_is_right_or_wrong(ggufs: tuple[Any, dict[str, Path]]) -> None:
    from orchestrator.tasks.lm.spec import prompts

    lm, paths = ggufs
    chosen = prompts(lm, 3)
    same = llamacpp.speculative_child(paths["target"], paths["target"], chosen, 24, 4, 1, 120)
    wrong = llamacpp.speculative_child(paths["noisy"], paths["target"], chosen, 24, 4, 1, 120)
    assert same["spec_identical"] == 1.0 and wrong["spec_identical"] == 1.0
    assert same["spec_acceptance_rate"] == 1.0 and same["spec_tokens_per_round"] > 4  # k + 1 per target call
    assert wrong["spec_acceptance_rate"] < 0.9 and wrong["spec_tokens_per_round"] < same["spec_tokens_per_round"]
    for out in (same, wrong):
        assert out["spec_tokens_per_s"] > 0 and out["spec_target_tokens_per_s"] > 0
        assert out["spec_speedup"] == pytest.approx(out["spec_tokens_per_s"] / out["spec_target_tokens_per_s"])


def test_a_gguf_leaf_drafts_for_the_baseline_in_llamacpp(tmp_path: Path) -> None:
    store = {"cache": str(tmp_path / "cache"), "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
             "artifacts": str(tmp_path / "art")}
    proc = run_cli(store, "pipeline=[gguf]", *[a for a in TINY if a.startswith("task")], "stages.gguf.type=Q8_0",
                   "eval.speculative.target=baseline", "eval.speculative.tokens=16", "eval.speculative.prompts=2",
                   "tracking.log_models=false")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (leaf,) = [r for r in leaf_runs(store, "adhoc") if r.data.tags.get("orchestrator.format") == "gguf"]
    m = leaf.data.metrics
    assert m["spec_identical"] == 1.0 and m["spec_acceptance_rate"] > 0.8  # Q8_0 of the verifying model itself
    assert m["spec_speedup"] > 0 and "Drafts for speculative decoding" in proc.stdout
