"""The Hugging Face path, offline: a tiny BERT built from a config + a tokenizer and a CSV written here."""

from __future__ import annotations

import copy
import csv
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import compose, run_cli

WORDS = {"negative": ["bad", "awful", "hate", "worst"], "neutral": ["table", "monday", "paper", "train"],
         "positive": ["good", "great", "love", "best"]}
FILLER = ["the", "a", "it", "was", "today", "my", "this", "day", "so", "very"]


def write_tiny_model(folder: Path, extra_words: list[str] | None = None) -> None:
    """A 2-layer BERT (hidden 32, 4 heads, FFN 64) and a word-level WordPiece tokenizer, saved like a hub model
    (`extra_words`: more vocabulary that the tiny data never uses)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)  # the "pretrained" weights are random: make them the same every run
    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *(w for ws in WORDS.values() for w in ws),
             *(extra_words or [])]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(folder)


def write_tiny_csv(path: Path, rows: int = 360) -> None:
    """Short sentences whose sentiment word decides the label (learnable in a few epochs)."""
    rng = random.Random(0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "mood"])
        for i in range(rows):
            mood = list(WORDS)[i % 3]
            words = rng.sample(FILLER, rng.randint(1, 5)) + rng.sample(WORDS[mood], 2)
            rng.shuffle(words)
            writer.writerow([" ".join(words), mood])


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("hf")
    write_tiny_model(root / "model")
    write_tiny_csv(root / "reviews.csv")
    return {"model": str(root / "model"), "dataset": str(root / "reviews.csv")}


def tiny_params(files: dict[str, str], **overrides: Any) -> dict[str, Any]:
    """Task params of the tiny model; a high lr because the model starts from random weights."""
    return {"name": "hf", "model": files["model"], "dataset": files["dataset"], "text_column": "review",
            "label_column": "mood", "test_size": 90, "val_size": 30, "max_length": 16, "epochs": 4,
            "lr": 2e-3, "batch_size": 8, **overrides}


@pytest.fixture(scope="module")
def task(hf_files: dict[str, str]) -> Any:
    from orchestrator.tasks.hf.task import HFClassification, HFParams

    return HFClassification(HFParams(**tiny_params(hf_files)), seed=0)


@pytest.fixture(scope="module")
def baseline(task: Any) -> Any:
    return task.build_baseline()


def ctx_for(task: Any, folder: Path, teacher: Any) -> Any:
    from orchestrator.stages import StageContext

    folder.mkdir(parents=True, exist_ok=True)
    return StageContext(task=task, work_dir=folder, seed=0, teacher=lambda: teacher)


def run_stage(name: str, ctx: Any, model: Any, **params: Any) -> Any:
    from orchestrator.stages import REGISTRY

    cls = REGISTRY[name]
    return cls(cls.Params(**params)).run(ctx, model)


def logits(task: Any, model: Any, n: int = 16) -> np.ndarray:
    import torch

    inputs, _ = next(task.batches("test", n))
    with torch.no_grad():
        return task.forward(model.eval(), inputs).numpy()


def test_task_loads_local_model_and_csv(task: Any) -> None:
    assert task.class_names == ["negative", "neutral", "positive"]
    assert task.input_names == ["input_ids", "token_type_ids", "attention_mask"]
    sizes = {s: len(task._data[0][s]) for s in ("train", "val", "test")}
    assert sizes == {"train": 240, "val": 30, "test": 90}
    inputs, labels = next(task.batches("train", 8, shuffle=True))
    assert inputs["input_ids"].shape[0] == 8 == labels.shape[0]
    feeds, _ = next(task.onnx_batches("test", 4))
    assert feeds["input_ids"].shape == (4, 16) and feeds["attention_mask"].dtype == np.int64
    assert feeds["attention_mask"][:, -1].sum() < 4  # short texts are padded to max_length


def test_split_is_seeded(hf_files: dict[str, str]) -> None:
    from orchestrator.tasks.hf.task import HFClassification, HFParams

    def test_rows(seed: int) -> list:
        t = HFClassification(HFParams(**tiny_params(hf_files)), seed=seed)
        return t._data[0]["test"].columns["input_ids"][:10]

    same = [np.array_equal(a, b) for a, b in zip(test_rows(0), test_rows(0), strict=True)]
    other = [np.array_equal(a, b) for a, b in zip(test_rows(0), test_rows(1), strict=True)]
    assert all(same) and not all(other)


def test_named_splits_and_other_formats(hf_files: dict[str, str], tmp_path: Path) -> None:
    import pandas as pd

    from orchestrator.tasks.hf.task import HFClassification, HFParams

    table = pd.read_csv(hf_files["dataset"]).rename(columns={"review": "text", "mood": "label"})
    (tmp_path / "folder").mkdir()
    table[:300].to_json(tmp_path / "folder" / "train.jsonl", orient="records", lines=True)
    table[300:].to_json(tmp_path / "folder" / "test.jsonl", orient="records", lines=True)
    table.to_parquet(tmp_path / "all.parquet")
    by_folder = HFClassification(HFParams(model=hf_files["model"], dataset=str(tmp_path / "folder")), seed=0)
    assert {s: len(by_folder._data[0][s]) for s in ("train", "val", "test")} == {"train": 300, "val": 0, "test": 60}
    by_file = HFClassification(HFParams(model=hf_files["model"], dataset=str(tmp_path / "all.parquet"),
                                        test_size=50, train_size=100, labels=["positive", "neutral", "negative"]),
                               seed=0)
    assert {s: len(by_file._data[0][s]) for s in ("train", "test")} == {"train": 100, "test": 50}
    assert by_file.class_names == ["positive", "neutral", "negative"]  # the configured order wins


def test_baseline_fine_tune_learns(task: Any, baseline: Any) -> None:
    preds = logits(task, baseline, 90).argmax(-1)
    labels = np.concatenate([y.numpy() for _, y in task.batches("test", 90)])
    scores = task.score(np.eye(3)[preds], labels)
    assert set(scores) == {"accuracy", "f1"}
    assert scores["accuracy"] > 0.55, scores  # chance is 1/3 (a random-init BERT may still confuse 2 classes)


def test_metric_modules_match_sklearn() -> None:
    from sklearn.metrics import f1_score

    from orchestrator.measure.metrics import classification

    preds, labels = np.array([0, 1, 1, 2, 0, 0]), np.array([0, 1, 2, 2, 1, 0])
    got = classification(preds, labels, 4)  # class 3 never appears: macro F1 still counts it as 0
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["f1"] == pytest.approx(f1_score(labels, preds, labels=[0, 1, 2, 3], average="macro", zero_division=0))


def test_head_and_ffn_pruning_runs_exports_and_reloads(task: Any, baseline: Any, tmp_path: Path) -> None:
    from orchestrator.tasks.hf.model import attentions, is_intact, load_pretrained

    ctx = ctx_for(task, tmp_path / "prune", baseline)
    pruned = run_stage("prune", ctx, copy.deepcopy(baseline), ratio=0.5).model
    assert [a.num_attention_heads for a in attentions(pruned)] == [2, 2]
    assert [a.query.out_features for a in attentions(pruned)] == [16, 16]  # whole heads go, head size stays 8
    assert [layer.intermediate.dense.out_features for layer in pruned.bert.encoder.layer] == [32, 32]
    assert pruned.bert.embeddings.word_embeddings.embedding_dim == 32  # the residual width is untouched
    assert not is_intact(pruned) and is_intact(baseline)
    shapes = pruned.config.pruned_linears  # q, k, v, attention output (in), FFN in and out, per layer
    assert len(shapes) == 12 and shapes["bert.encoder.layer.1.output.dense"] == [32, 32]
    out = run_stage("export", ctx_for(task, tmp_path / "export", baseline), pruned)
    assert out.metrics["export_max_abs_diff"] < 1e-4
    dynamo = run_stage("export", ctx_for(task, tmp_path / "dynamo", baseline), pruned, exporter="dynamo")
    assert dynamo.metrics["export_max_abs_diff"] < 1e-4
    pruned.save_pretrained(tmp_path / "saved")
    np.testing.assert_allclose(logits(task, load_pretrained(tmp_path / "saved")), logits(task, pruned), atol=1e-5)
    from orchestrator.artifacts import torch_io

    (tmp_path / "io").mkdir()
    reloaded = torch_io.load(tmp_path / "io" / torch_io.save(pruned, tmp_path / "io", task), task)
    assert [a.num_attention_heads for a in attentions(reloaded)] == [2, 2]
    np.testing.assert_allclose(logits(task, reloaded), logits(task, pruned), atol=1e-5)


def test_shrink_keeps_every_kth_layer_from_the_top(task: Any, baseline: Any, tmp_path: Path) -> None:
    import torch

    student = copy.deepcopy(baseline)
    top = copy.deepcopy(student.bert.encoder.layer[1].state_dict())
    out = run_stage("distill", ctx_for(task, tmp_path / "d", baseline), student, shrink=2, epochs=0)
    model = out.model
    assert len(model.bert.encoder.layer) == 1 and model.config.num_hidden_layers == 1
    kept = model.bert.encoder.layer[0].state_dict()
    assert all(torch.equal(kept[k], v) for k, v in top.items())
    exported = run_stage("export", ctx_for(task, tmp_path / "e", baseline), model)  # intact again: optimum path
    assert exported.metrics["export_max_abs_diff"] < 1e-4
    from orchestrator.artifacts import torch_io

    (tmp_path / "io").mkdir()
    reloaded = torch_io.load(tmp_path / "io" / torch_io.save(model, tmp_path / "io", task), task)
    assert len(reloaded.bert.encoder.layer) == 1
    np.testing.assert_allclose(logits(task, reloaded), logits(task, model), atol=1e-5)


def test_hidden_state_distillation_trains(task: Any, baseline: Any, tmp_path: Path) -> None:
    from orchestrator.stages.distill import hidden_loss

    student = run_stage("distill", ctx_for(task, tmp_path / "d", baseline), copy.deepcopy(baseline),
                        shrink=2, hidden_weight=1.0, epochs=2, lr=1e-3).model
    inputs, _ = next(task.batches("test", 16))
    loss = hidden_loss(task.hidden_states(student, inputs), task.hidden_states(baseline, inputs))
    assert np.isfinite(float(loss))
    assert (logits(task, student).argmax(-1) == logits(task, baseline).argmax(-1)).mean() > 0.6


def test_a_wrong_export_fails_the_node(task: Any, baseline: Any, tmp_path: Path, monkeypatch: Any) -> None:
    import torch

    from orchestrator.artifacts.export_check import ExportMismatch

    real_export = type(task).export

    def corrupted(self: Any, model: Any, path: Path, opset: int, exporter: str) -> None:
        broken = copy.deepcopy(model)
        with torch.no_grad():
            broken.classifier.bias += 1.0
        real_export(self, broken, path, opset, exporter)

    monkeypatch.setattr(type(task), "export", corrupted)
    with pytest.raises(ExportMismatch, match="max_abs_diff"):
        run_stage("export", ctx_for(task, tmp_path / "x", baseline), baseline)


def test_hub_id_fails_fast_offline(hf_files: dict[str, str], monkeypatch: Any) -> None:
    from orchestrator.errors import ConfigError
    from orchestrator.sweep import build_plan

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = compose("+recipe=pkdq", "task=hf", f"task.dataset={hf_files['dataset']}",
                   "task.model=sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(ConfigError) as err:
        build_plan(data, "pkdq")
    assert err.value.key == "task.model" and "local path" in str(err.value)
    assert "sentence-transformers/all-MiniLM-L6-v2" in str(err.value)


def test_shrink_is_refused_before_compute_for_a_task_without_layers() -> None:
    from orchestrator.errors import ConfigError
    from orchestrator.sweep import build_plan

    with pytest.raises(ConfigError) as err:
        build_plan(compose("+recipe=pkdq", "stages.distill.shrink=2"), "pkdq")
    assert err.value.key == "stages.distill.shrink"


def test_tweets_task_uses_the_bundled_model_and_data() -> None:
    from orchestrator.config.schema import validate_task
    from orchestrator.tasks import TASKS
    from orchestrator.tasks.hf.tweets import Tweets, TweetsParams

    data = compose("task=tweets")
    assert data["stages"]["distill"]["lr"] == 5e-5  # the task file sets transformer-friendly stage settings
    params = validate_task(data["task"], TASKS)
    assert isinstance(params, TweetsParams) and params.model == ""  # '' = bundled: no local path in node keys
    tweets = Tweets(params, seed=0)
    assert (Path(tweets.model_dir()) / "config.json").is_file()
    assert Path(tweets.data_source()).suffix == ".csv"


@pytest.mark.parametrize("flag, auto", [(None, "float32"), ("amx_bf16", "bfloat16")])
def test_train_dtype_auto_follows_the_cpu_and_says_so_once(tmp_path: Path, monkeypatch: Any, capsys: Any,
                                                          flag: str | None, auto: str) -> None:
    from orchestrator.tasks.hf import precision
    from orchestrator.tasks.hf.task import HFParams

    monkeypatch.setattr(precision, "cpu_bf16", lambda: flag)
    monkeypatch.setattr(precision, "_said", set())
    where = {"model": str(tmp_path), "dataset": str(tmp_path)}
    assert [HFParams(**where).train_dtype for _ in range(2)] == [auto, auto]  # resolved before any key is taken
    assert HFParams(**where, train_dtype="bfloat16").train_dtype == "bfloat16"  # explicit: kept (and its key)
    assert HFParams(**where, train_dtype="float32").train_dtype == "float32"
    err = capsys.readouterr().err
    assert err.count(f"task.train_dtype=auto trains in {auto}") == 1
    assert err.count("warning: task.train_dtype=bfloat16 on a CPU without") == (1 if flag is None else 0)


def test_training_threads_default_to_the_workers_cores_but_digits() -> None:
    import os

    from orchestrator.config.executor import ExecutorConfig
    from orchestrator.config.typed import build
    from orchestrator.sweep import threads_per_worker
    from orchestrator.tasks import TASKS

    given = compose("task=tweets")["executor"]
    assert given["torch_threads"] is None  # unset: each task's own default
    executor = build("executor", ExecutorConfig, given)
    cores = max(1, (os.cpu_count() or 1))
    assert threads_per_worker(executor, None, TASKS["tweets"].torch_threads) == cores
    assert threads_per_worker(executor, None, TASKS["digits"].torch_threads) == 1  # measured faster on one
    two = build("executor", ExecutorConfig, {**given, "workers": 2})
    assert threads_per_worker(two, None, 0) == max(1, cores // 2)
    three = build("executor", ExecutorConfig, {**given, "torch_threads": 3})
    assert threads_per_worker(three, None, 1) == 3  # an explicit setting wins


@pytest.mark.slow
def test_pkdq_end_to_end_from_a_user_task_file(hf_files: dict[str, str], store: dict[str, str],
                                               tmp_path: Path) -> None:
    """The README's way: a task file outside the project (defaults: hf) + the pkdq recipe, from the CLI."""
    import json

    params = {k: v for k, v in tiny_params(hf_files).items() if k not in ("name", "epochs")}  # FAST sets epochs
    (tmp_path / "my_conf" / "task").mkdir(parents=True)
    lines = ["# @package _global_", "defaults:", "  - hf", "  - _self_", "task:"]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in params.items()]
    (tmp_path / "my_conf" / "task" / "reviews.yaml").write_text("\n".join(lines) + "\n")
    proc = run_cli(store, "+recipe=pkdq", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "task=reviews",
                   "stages.distill.epochs=2", "stages.distill.lr=1e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.lstrip("* ").startswith("prune>distill>quantize")]
    assert len(rows) == 4 and all("done" in r for r in rows), proc.stdout
    metas = [json.loads(p.read_text()) for p in Path(store["cache"]).glob("nodes/*/meta.json")]
    assert [m["params"]["model"] for m in metas if m["stage"] == "baseline"] == [hf_files["model"]]
    diffs = [m["stage_metrics"]["export_max_abs_diff"] for m in metas if m["stage"] == "export"]
    assert len(diffs) == 2 and max(diffs) < 1e-4
