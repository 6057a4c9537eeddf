"""Vocabulary trimming, layer keeping, int4_int8 and eval.pad_to on the tiny BERT of test_hf (real torch, ONNX
Runtime and the CLI). The tiny tokenizer here has words that no text uses, so trimming has rows to drop."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import benchmark, run_cli
from test_hf import ctx_for, run_stage, tiny_params, write_tiny_csv, write_tiny_model

UNUSED = ["river", "cloud", "stone", "window", "garden", "violin", "pepper", "rocket"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny BERT with eight extra words in its vocabulary that the data never uses."""
    root = tmp_path_factory.mktemp("trim")
    write_tiny_model(root / "model", extra_words=UNUSED)
    write_tiny_csv(root / "reviews.csv")
    return {"model": str(root / "model"), "dataset": str(root / "reviews.csv")}


@pytest.fixture(scope="module")
def task(files: dict[str, str]) -> Any:
    from orchestrator.tasks.hf.task import HFClassification, HFParams

    return HFClassification(HFParams(**tiny_params(files)), seed=0)


@pytest.fixture(scope="module")
def baseline(task: Any) -> Any:
    return task.build_baseline()


def all_logits(task: Any, model: Any, ids: np.ndarray | None = None) -> np.ndarray:
    """Logits of the whole test split (optionally with other input ids, same masks)."""
    import torch

    feeds, _ = next(task.onnx_batches("test", 10_000))
    if ids is not None:
        feeds = {**feeds, "input_ids": ids}
    with torch.no_grad():
        return model.eval()(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()


def test_trim_keeps_logits_on_kept_texts_and_maps_the_rest_to_unk(task: Any, baseline: Any,
                                                                   tmp_path: Path) -> None:
    from orchestrator.artifacts import torch_io

    out = run_stage("trim", ctx_for(task, tmp_path / "t", baseline), copy.deepcopy(baseline), top_k=21)
    m, model = out.metrics, out.model
    assert m["vocab_before"] == len(task.tokenizer) and m["vocab_after"] < m["vocab_before"] - len(UNUSED)
    assert m["embedding_params_removed"] == (m["vocab_before"] - m["vocab_after"]) * 32
    assert 0 < m["oov_test_token_frac"] < 1 and 0 < m["test_texts_all_kept_frac"] < 1

    feeds, _ = next(task.onnx_batches("test", 10_000))
    ids, mask = feeds["input_ids"], feeds["attention_mask"].astype(bool)
    kept_ids = set(np.flatnonzero(model.get_input_embeddings().remap.numpy()
                                  != model.get_input_embeddings().remap.numpy()[task.tokenizer.unk_token_id]))
    kept_ids.add(task.tokenizer.unk_token_id)
    whole = np.array([all(t in kept_ids for t in row[keep]) for row, keep in zip(ids, mask, strict=True)])
    assert whole.mean() == pytest.approx(m["test_texts_all_kept_frac"])
    before, after = all_logits(task, baseline), all_logits(task, model)
    assert np.abs(before[whole] - after[whole]).max() <= 1e-4  # same logits wherever no token was dropped
    assert np.abs(before[~whole] - after[~whole]).max() > 1e-3
    # a dropped token reads [UNK]'s row: the untrimmed model fed [UNK] there computes the same
    as_unk = np.where(np.isin(ids, list(kept_ids)), ids, task.tokenizer.unk_token_id)
    np.testing.assert_allclose(all_logits(task, baseline, as_unk), after, atol=1e-4)

    # stored without pickle and rebuilt from plain data; exported, the graph takes the same tokenizer ids
    (tmp_path / "io").mkdir()
    reloaded = torch_io.load(tmp_path / "io" / torch_io.save(model, tmp_path / "io", task), task)
    np.testing.assert_array_equal(all_logits(task, reloaded), after)
    exported = run_stage("export", ctx_for(task, tmp_path / "e", baseline), reloaded)
    assert exported.metrics["export_max_abs_diff"] < 1e-4
    import onnxruntime as ort

    sess = ort.InferenceSession(str(exported.model))
    np.testing.assert_allclose(sess.run(None, feeds)[0], after, atol=1e-4)


def test_default_trim_drops_only_unused_words_and_composes(task: Any, baseline: Any, tmp_path: Path) -> None:
    """Everything the training data uses stays (the unused words go); trimming a trimmed model and dropping
    layers afterwards keep working, and a text of kept tokens still gives the untrimmed logits."""
    out = run_stage("trim", ctx_for(task, tmp_path / "a", baseline), copy.deepcopy(baseline))
    assert out.metrics["vocab_before"] - out.metrics["vocab_after"] >= len(UNUSED)
    assert out.metrics["oov_test_token_frac"] == 0 and out.metrics["test_texts_all_kept_frac"] == 1
    np.testing.assert_allclose(all_logits(task, out.model), all_logits(task, baseline), atol=1e-4)
    again = run_stage("trim", ctx_for(task, tmp_path / "b", baseline), copy.deepcopy(out.model), top_k=21)
    once = run_stage("trim", ctx_for(task, tmp_path / "c", baseline), copy.deepcopy(baseline), top_k=21)
    assert again.metrics["vocab_after"] == once.metrics["vocab_after"]
    np.testing.assert_allclose(all_logits(task, again.model), all_logits(task, once.model), atol=1e-5)
    student = run_stage("distill", ctx_for(task, tmp_path / "d", baseline), copy.deepcopy(out.model),
                        keep_layers=1, epochs=1, lr=1e-3, hidden_weight=1.0).model
    assert student.config.num_hidden_layers == 1 and student.config.vocab_size == out.metrics["vocab_after"]


def test_kept_layers_express_any_count() -> None:
    from orchestrator.tasks.base import kept_layers

    assert kept_layers(6, every=2) == [1, 3, 5] and kept_layers(6, every=3) == [2, 5]
    assert kept_layers(6, count=2) == [2, 5] and kept_layers(6, count=4) == [1, 2, 4, 5]
    assert kept_layers(6, count=1) == [5] and kept_layers(6, count=9) == list(range(6))


def test_int4_int8_reports_each_operator_family(task: Any, baseline: Any, tmp_path: Path) -> None:
    import onnxruntime as ort

    trimmed = run_stage("trim", ctx_for(task, tmp_path / "t", baseline), copy.deepcopy(baseline)).model
    onnx_path = run_stage("export", ctx_for(task, tmp_path / "e", baseline), trimmed).model
    feeds, _ = next(task.onnx_batches("test", 10_000))
    reference = ort.InferenceSession(str(onnx_path)).run(None, feeds)[0]
    mixed = run_stage("quantize", ctx_for(task, tmp_path / "q", baseline), onnx_path, mode="int4_int8",
                      block_size=16, int4_matmul=False)
    # embedding tables int4 (the id map, an int lookup, is left alone), every weight MatMul int8
    assert mixed.metrics["ops_int4_gather"] == 3 and mixed.metrics["ops_int8_matmul"] == 14
    assert "ops_float_matmul" not in mixed.metrics and "ops_float_gather" not in mixed.metrics
    full = run_stage("quantize", ctx_for(task, tmp_path / "r", baseline), onnx_path, mode="int4_int8",
                     block_size=16)
    assert full.metrics["ops_int4_gather"] == 3 and full.metrics["ops_int4_matmul"] == 14
    for out in (mixed, full):
        logits = ort.InferenceSession(str(out.model)).run(None, feeds)[0]
        assert (logits.argmax(-1) == reference.argmax(-1)).mean() > 0.9
    assert Path(full.model).stat().st_size < Path(mixed.model).stat().st_size < Path(onnx_path).stat().st_size


def test_pad_to_longest_times_real_lengths(task: Any) -> None:
    static = task.latency_feeds("max_length", 50)
    assert len(static) == 1 and static[0]["input_ids"].shape == (1, task.params.max_length)
    sample = task.latency_feeds("longest", 50)
    again = task.latency_feeds("longest", 50)  # seeded: the same texts for every artifact
    assert len(sample) == len(again) == 50
    assert all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(sample, again, strict=True))
    lengths = {f["input_ids"].shape[1] for f in sample}
    assert len(lengths) > 1 and max(lengths) <= task.params.max_length
    assert all(f["attention_mask"].all() for f in sample)  # batch 1 at its own length: no padding at all


@pytest.mark.slow
def test_trim_layers_and_int4_int8_through_the_cli(files: dict[str, str], store: dict[str, str]) -> None:
    """trim in two positions of a sweep, keep_layers, int4_int8 and pad_to=longest, from the command line."""
    proc = run_cli(store, "task=hf", f"task.model={files['model']}", f"task.dataset={files['dataset']}",
                   "task.text_column=review", "task.label_column=mood", "task.test_size=90", "task.val_size=30",
                   "task.max_length=16", "task.lr=2e-3", "task.batch_size=8",
                   "orderings=[[trim,distill,quantize],[prune,trim,distill,quantize]]",
                   "stages.distill.keep_layers=1", "stages.distill.epochs=2", "stages.distill.lr=1e-3",
                   "stages.quantize.mode=int4_int8", "stages.quantize.block_size=16", "stages.trim.top_k=21",
                   "eval.pad_to=longest", "tracking.enabled=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metas = {p.parent.name: json.loads(p.read_text()) for p in Path(store["cache"]).glob("nodes/*/meta.json")}
    trims = [m for m in metas.values() if m["stage"] == "trim"]
    assert len(trims) == 2 and all(m["stage_metrics"]["vocab_after"] < m["stage_metrics"]["vocab_before"]
                                   for m in trims)
    quants = [m for m in metas.values() if m["stage"] == "quantize"]
    assert len(quants) == 2 and all(m["stage_metrics"]["ops_int4_gather"] >= 1 for m in quants)
    evals = [json.loads(p.read_text()) for p in Path(store["cache"]).glob("nodes/*/eval/*.json")]
    seq = [e["latency_seq_len"] for e in evals]
    assert seq and all(0 < s < 16 for s in seq)  # real lengths, shorter than the static shape


@pytest.mark.parametrize("overrides, key", [
    (["orderings=[[trim]]"], "stages.trim"),
    (["eval.pad_to=longest"], "eval.pad_to"),
    (["eval.pad_to=shortest"], "eval.pad_to"),
    (["task=tweets", "orderings=[[trim]]", "stages.trim.corpus=test"], "corpus"),
    (["task=tweets", "orderings=[[distill]]", "stages.distill.keep_layers=2", "stages.distill.shrink=2"],
     "keep_layers"),
    (["orderings=[[distill]]", "stages.distill.keep_layers=2"], "stages.distill.keep_layers"),
    (["orderings=[[distill]]", "stages.distill.transfer=100"], "stages.distill.transfer"),
    (["task=tweets", "orderings=[[quantize]]", "stages.quantize.mode=int4_int8",
      "stages.quantize.accuracy_level=7"], "accuracy_level"),
])
def test_bad_input_exits_2_naming_the_key(store: dict[str, str], overrides: list[str], key: str) -> None:
    proc = run_cli(store, "+recipe=pkdq", *overrides, "tracking.enabled=false", timeout=120)
    assert proc.returncode == 2, (proc.stdout[-1000:], proc.stderr[-2000:])
    assert key in proc.stderr, proc.stderr[-2000:]
    assert not list(Path(store["cache"]).glob("nodes/*/meta.json"))  # refused before any compute


def test_distill_on_a_transfer_set_of_unlabelled_texts(files: dict[str, str], tmp_path: Path) -> None:
    """transfer=N adds N texts of the train split that train_size left out, labelled by the teacher only."""
    import torch

    from orchestrator.stages.distill import kd_loss
    from orchestrator.tasks.hf.task import HFClassification, HFParams

    task = HFClassification(HFParams(**tiny_params(files, train_size=100)), seed=0)
    teacher = task.build_baseline()
    name = task.transfer_split(120)
    labels = task._data[0][name].labels
    assert len(labels) == 220 and (labels[:100] >= 0).all() and (labels[100:] == -1).all()
    whole = HFClassification(HFParams(**tiny_params(files)), seed=0).token_ids("train")  # no train_size
    extra = task._data[0][name].columns["input_ids"][100:]
    assert all(np.array_equal(a, b) for a, b in zip(extra, whole[100:220], strict=True))  # the rest of train
    with pytest.raises(ValueError, match="only"):
        task.transfer_split(10_000)
    student, target = torch.randn(4, 3), torch.randn(4, 3)
    unlabelled = torch.full((4,), -1)
    assert kd_loss(student, target, unlabelled, 2.0, 0.3) == pytest.approx(float(kd_loss(student, target, unlabelled,
                                                                                          2.0, 1.0)))
    mixed = torch.tensor([0, -1, 2, -1])
    assert torch.isfinite(kd_loss(student, target, mixed, 2.0, 0.3))
    out = run_stage("distill", ctx_for(task, tmp_path / "d", teacher), copy.deepcopy(teacher), keep_layers=1,
                    transfer=120, epochs=2, lr=1e-3)
    agree = (all_logits(task, out.model).argmax(-1) == all_logits(task, teacher).argmax(-1)).mean()
    assert agree > 0.6


@pytest.mark.slow
def test_the_tiny_tweets_recipe_runs_on_a_users_encoder(files: dict[str, str], store: dict[str, str]) -> None:
    """The recipe's whole DAG on the tiny BERT (a user's local encoder folder: no code change), reduced."""
    proc = run_cli(store, "+recipe=tiny_tweets", "task=hf", f"task.model={files['model']}",
                   f"task.dataset={files['dataset']}", "task.text_column=review", "task.label_column=mood",
                   "task.test_size=90", "task.val_size=30", "task.train_size=150", "task.max_length=16",
                   "task.lr=2e-3", "task.batch_size=8", "stages.distill.transfer=60", "stages.distill.epochs=1",
                   "stages.distill.lr=1e-3", "stages.quantize.block_size=16", "~sweep",
                   "+sweep={stages.quantize.mode:[int8,int4_int8]}", "tracking.log_models=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "13 unique nodes: 13 stage executions" in proc.stdout, proc.stdout[-3000:]
    metas = [json.loads(p.read_text()) for p in Path(store["cache"]).glob("nodes/*/meta.json")]
    distill = [m for m in metas if m["stage"] == "distill"]
    assert len(distill) == 1 and distill[0]["params"]["keep_layers"] == 2 and distill[0]["params"]["transfer"] == 60
    # the benchmark's table: every leaf against the sweep's own baseline, ratios from the logged metrics
    bench = benchmark("tiny_table")
    table = {r["variant"]: r for r in bench.rows(bench.leaves(store["uri"], "tiny_tweets"))}
    assert len(table) == 7 and table["baseline"]["x smaller"] == 1 and table["baseline"]["drop pts"] == 0
    chain = [r for name, r in table.items() if name.startswith("trim>prune>distill>quantize")]
    assert len(chain) == 2 and all(r["x smaller"] > 1 for r in chain)


@pytest.mark.slow
def test_the_search_tweets_recipe_searches_a_users_encoder(files: dict[str, str], store: dict[str, str]) -> None:
    """The search recipe on the tiny BERT: its space counted per chain, then 3 trials end to end."""
    tiny = ("task=hf", f"task.model={files['model']}", f"task.dataset={files['dataset']}", "task.text_column=review",
            "task.label_column=mood", "task.test_size=90", "task.val_size=30", "task.train_size=150",
            "task.max_length=16", "task.lr=2e-3", "task.batch_size=8", "stages.distill.transfer=60",
            "stages.distill.epochs=1", "stages.distill.lr=1e-3", "stages.quantize.block_size=16",
            "tracking.log_models=false")
    dry = run_cli(store, "+recipe=search_tweets", *tiny, "dry_run=true")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "as a grid: 120 points" in dry.stdout and "budget: 16 trials" in dry.stdout
    proc = run_cli(store, "+recipe=search_tweets", *tiny, "search.trials=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trial 3/3" in proc.stderr and "Recommended" in proc.stdout
    nodes, executed = map(int, re.search(r"(\d+) unique nodes: (\d+) stage executions", proc.stdout).groups())
    assert executed == nodes
