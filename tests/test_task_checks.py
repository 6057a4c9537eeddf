"""Broken model files and data a new user passes in, found by the task's preflight check (Task.check): each exits
2 in one line naming the key, within seconds, before any node is computed and without a traceback. The files
are written here by hand (no torch, nothing trained): the checks read headers, never weights."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from orchestrator.errors import ConfigError

CORPUS = "\n\n".join(f"Paragraph {i} of a plain text corpus, long enough to split into windows." for i in range(400))


def fake_model(folder: Path, model_type: str = "bert", **config: Any) -> Path:
    """A model folder whose files look whole to a reader of headers: config.json, a one-tensor safetensors file
    and a WordPiece vocabulary (no torch needed, nothing loadable by design)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "max_position_embeddings": 512,
                                                    **config}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\ngood\nbad\n")
    return folder


def tiny_gguf(path: Path, arch: str = "llama") -> Path:
    """A whole GGUF file of one tensor, with a tokenizer and a context length (written by the gguf package)."""
    import numpy as np

    GGUFWriter = pytest.importorskip("gguf").GGUFWriter  # noqa: N806 (the class, as gguf names it)

    writer = GGUFWriter(str(path), arch=arch)
    writer.add_context_length(128)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "c"])
    writer.add_tensor("token_embd.weight", np.zeros((3, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def labelled_csv(path: Path, rows: int = 60, header: str = "text,label") -> Path:
    path.write_text(header + "\n" + "".join(f"text number {i},{'ab'[i % 2]}\n" for i in range(rows)))
    return path


def refused(tmp_path: Path, *args: str) -> str:
    """The CLI on `args`: exit 2 within 20 s, one error line, no traceback, no node computed; returns stderr."""
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "orchestrator", "+recipe=pkdq", f"cache.dir={cache}",
           f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifact_root={tmp_path / 'art'}", *args]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                         timeout=120)
    took, message = time.perf_counter() - start, out.stdout + out.stderr
    assert out.returncode == 2, message
    assert took <= 20, f"took {took:.1f}s: {message}"
    assert "Traceback" not in message
    assert len([m for m in out.stderr.splitlines() if m.startswith("error: ")]) == 1, message
    assert not (cache / "nodes").exists() or not any((cache / "nodes").iterdir())
    return out.stderr


# --- the corpus of bad inputs, through the real CLI ---------------------------------------------------------------

def test_a_gguf_file_that_is_not_one(tmp_path):
    (tmp_path / "model.gguf").write_text("<html>404 Not Found</html>")
    msg = refused(tmp_path, "task=lm", f"task.model={tmp_path / 'model.gguf'}")
    assert "task.model=" in msg and "does not start with the GGUF magic" in msg


def test_a_gguf_cut_off_in_its_header(tmp_path):
    whole = tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(whole[:40])
    msg = refused(tmp_path, "task=lm", f"task.model={tmp_path / 'cut.gguf'}")
    assert "task.model=" in msg and "the header is cut off at byte 40" in msg


def test_a_gguf_cut_off_in_its_tensors(tmp_path):
    whole = tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(whole[:-8])
    msg = refused(tmp_path, "task=lm", f"task.model={tmp_path / 'cut.gguf'}")
    assert "task.model=" in msg and f"the file has {len(whole) - 8:,}" in msg and "interrupted download" in msg


def test_a_model_folder_without_config_json(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"x")
    msg = refused(tmp_path, "task=lm", f"task.model={tmp_path / 'model'}")
    assert "task.model=" in msg and "no config.json" in msg


def test_a_config_json_with_an_unknown_model_type(tmp_path):
    model = fake_model(tmp_path / "model", model_type="brand_new_arch")
    msg = refused(tmp_path, "task=lm", f"task.model={model}")
    assert "task.model=" in msg and "model_type 'brand_new_arch' is not an architecture transformers" in msg


def test_an_empty_model_folder(tmp_path):
    (tmp_path / "model").mkdir()
    msg = refused(tmp_path, "task=lm", f"task.model={tmp_path / 'model'}")
    assert "task.model=" in msg and "is an empty folder" in msg


def test_a_markdown_corpus(tmp_path):
    (tmp_path / "notes.md").write_text(CORPUS)
    msg = refused(tmp_path, "task=tinylm", f"task.dataset={tmp_path / 'notes.md'}")
    assert "task.dataset=" in msg and "is a .md file; this task reads .txt, .jsonl" in msg and "KeyError" not in msg


def test_a_table_without_the_label_column(tmp_path):
    data = labelled_csv(tmp_path / "reviews.csv", header="text,mood")
    msg = refused(tmp_path, "task=hf", f"task.model={fake_model(tmp_path / 'model')}", f"task.dataset={data}")
    assert "task.label_column='label' is not allowed: is not a column of" in msg and "text, mood" in msg


def test_a_corpus_too_small_to_split(tmp_path):
    (tmp_path / "tiny.txt").write_text("sixteen chars ok")
    msg = refused(tmp_path, "task=tinylm", f"task.dataset={tmp_path / 'tiny.txt'}")
    assert "task.dataset='16 characters' is not allowed: is too small to split" in msg


def test_a_table_too_small_to_split(tmp_path):
    data = labelled_csv(tmp_path / "three.csv", rows=3)
    msg = refused(tmp_path, "task=hf", f"task.model={fake_model(tmp_path / 'model')}", f"task.dataset={data}")
    assert "task.dataset='3 usable rows' is not allowed: is too small to split" in msg


def test_an_empty_data_folder(tmp_path):
    (tmp_path / "data").mkdir()
    msg = refused(tmp_path, "task=hf", f"task.model={fake_model(tmp_path / 'model')}",
                  f"task.dataset={tmp_path / 'data'}")
    assert "task.dataset=" in msg and "is an empty folder" in msg


def test_a_dry_run_checks_the_files_too(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    assert "task.model=" in refused(tmp_path, "task=lm", f"task.model={tmp_path / 'model.gguf'}", "dry_run=true")


# --- more ways a model or data can be wrong, through the check itself (milliseconds each) -------------------------

def hf_check(**params: Any) -> None:
    from orchestrator.tasks.hf.task import HFClassification, HFParams

    HFClassification.check(HFParams(**params))


def lm_check(**params: Any) -> None:
    from orchestrator.tasks.lm.task import LMParams, LMTask

    LMTask.check(LMParams(**params))


def _weights_cut(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-2])


def _weights_lfs(folder: Path) -> None:
    (folder / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")


def _tf_only(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "tf_model.h5").write_bytes(b"\x89HDF")


def _no_tokenizer(folder: Path) -> None:
    (folder / "vocab.txt").unlink()


def _broken_config(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "bert",')


def _missing_shard(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "part-1.safetensors"}}))


@pytest.mark.parametrize("spoil, words", [
    (_weights_cut, "is cut off: its tensors need"),
    (_weights_lfs, "is a Git LFS pointer"),
    (_tf_only, "TensorFlow/Flax weights"),
    (_no_tokenizer, "has no tokenizer files"),
    (_broken_config, "its config.json is not valid JSON"),
    (_missing_shard, "misses 1 of the 1 weight shards"),
])
def test_a_spoilt_model_folder(tmp_path, spoil, words):
    model = fake_model(tmp_path / "model")
    spoil(model)
    with pytest.raises(ConfigError, match=words) as err:
        hf_check(model=str(model), dataset=str(labelled_csv(tmp_path / "d.csv")))
    assert err.value.key == "task.model"


@pytest.mark.parametrize("make, params, key, words", [
    (lambda d: fake_model(d / "m", "clip"), {}, "task.model", "no sequence classification head for model_type 'clip'"),
    (lambda d: fake_model(d / "m") / "model.safetensors", {}, "task.model", "is a file; this task reads a model"),
    (lambda d: fake_model(d / "m", max_position_embeddings=32), {"max_length": 64}, "task.max_length",
     "at most 32 tokens"),
])
def test_a_model_the_classifier_cannot_use(tmp_path, make, params, key, words):
    with pytest.raises(ConfigError, match=words) as err:
        hf_check(model=str(make(tmp_path)), dataset=str(labelled_csv(tmp_path / "d.csv")), **params)
    assert err.value.key == key


def test_a_model_the_language_model_task_cannot_use(tmp_path):
    encoder = fake_model(tmp_path / "mpnet", model_type="mpnet")
    with pytest.raises(ConfigError, match="has no causal language model head for model_type 'mpnet'"):
        lm_check(model=str(encoder))
    with pytest.raises(ConfigError, match="is a .safetensors file; a language model is a .gguf file") as err:
        lm_check(model=str(encoder / "model.safetensors"))
    assert "give the folder that holds it" in str(err.value)
    gguf = tiny_gguf(tmp_path / "m.gguf")
    with pytest.raises(ConfigError, match="this model reads at most 128 tokens") as err:
        lm_check(model=str(gguf), context=256)
    assert err.value.key == "task.context"
    lm_check(model=str(gguf), context=64)  # a whole file passes
    with pytest.raises(ConfigError, match="cannot convert"):
        lm_check(model=str(tiny_gguf(tmp_path / "odd.gguf", arch="wavenet")), context=64)
    (tmp_path / "holder").mkdir()
    (tmp_path / "holder" / "x.gguf").write_bytes((tmp_path / "m.gguf").read_bytes())
    with pytest.raises(ConfigError, match="give the file itself"):
        lm_check(model=str(tmp_path / "holder"))


@pytest.mark.parametrize("write, params, key, words", [
    (lambda p: p.write_bytes("text,label\ncafé,a\n".encode("latin-1")), {}, "task.encoding", "cannot decode"),
    (lambda p: labelled_csv(p), {"encoding": "klingon"}, "task.encoding", "not a text encoding"),
    (lambda p: labelled_csv(p), {"text_column": "body"}, "task.text_column", "is not a column"),
    (lambda p: labelled_csv(p), {"labels": ["a"]}, "task.labels", r"labels \['b'\] of the data are not listed"),
    (lambda p: p.write_text("text,label\n" + "".join(f"t{i},same\n" for i in range(40))), {}, "task.label_column",
     "at least two"),
    (lambda p: labelled_csv(p, rows=40), {"test_size": 40}, "task.dataset", "too small to split"),
    (lambda p: p.write_text(""), {}, "task.dataset", "is empty"),
    (lambda p: labelled_csv(p), {"train_split": "training"}, "task.train_split", "a single file is split 'train'"),
])
def test_a_table_the_classifier_cannot_use(tmp_path, write, params, key, words):
    write(tmp_path / "data.csv")
    with pytest.raises(ConfigError, match=words) as err:
        hf_check(model=str(fake_model(tmp_path / "m")), dataset=str(tmp_path / "data.csv"), **params)
    assert err.value.key == key


def test_other_table_formats_and_folders(tmp_path):
    model = str(fake_model(tmp_path / "m"))
    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(30)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    for name in ("d.jsonl", "d.json"):
        hf_check(model=model, dataset=str(tmp_path / name))
    with pytest.raises(ConfigError, match="is not a column"):
        hf_check(model=model, dataset=str(tmp_path / "d.jsonl"), label_column="mood")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.md").write_text("# notes")
    with pytest.raises(ConfigError, match="holds no data file this task reads"):
        hf_check(model=model, dataset=str(tmp_path / "docs"))
    with pytest.raises(ConfigError, match="no such file or folder"):
        hf_check(model=model, dataset=str(tmp_path / "gone.csv"))


def test_corpora_the_language_model_cannot_use(tmp_path):
    (tmp_path / "latin.txt").write_bytes(("caf\xe9 " * 2000).encode("latin-1"))
    with pytest.raises(ConfigError, match="is not utf-8 text"):
        lm_check(model=str(tiny_gguf(tmp_path / "m.gguf")), dataset=str(tmp_path / "latin.txt"), context=64)
    (tmp_path / "short.txt").write_text(CORPUS[:2000])  # val split: 5% = 100 bytes
    with pytest.raises(ConfigError, match="is longer than the val split") as err:
        lm_check(model=str(tmp_path / "m.gguf"), dataset=str(tmp_path / "short.txt"), context=128)
    assert err.value.key == "task.context"
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "train.txt").write_text(CORPUS)
    with pytest.raises(ConfigError, match="must hold train.* and test.*"):
        lm_check(model=str(tmp_path / "m.gguf"), dataset=str(tmp_path / "folder"), context=64)
    (tmp_path / "folder" / "test.jsonl").write_text(json.dumps({"body": CORPUS}) + "\n")
    with pytest.raises(ConfigError, match="is not a column") as err:
        lm_check(model=str(tmp_path / "m.gguf"), dataset=str(tmp_path / "folder"), context=64)
    assert err.value.key == "task.text_column"
    lm_check(model=str(tmp_path / "m.gguf"), dataset=str(tmp_path / "folder"), context=64, text_column="body")


def test_checks_import_neither_torch_nor_transformers(tmp_path):
    """A check runs before every sweep, cached reruns included, which never import torch."""
    model, data = fake_model(tmp_path / "m"), labelled_csv(tmp_path / "d.csv")
    code = ("import sys; from orchestrator.tasks.hf.task import HFClassification, HFParams; "
            f"HFClassification.check(HFParams(model={str(model)!r}, dataset={str(data)!r})); "
            "from orchestrator.tasks.lm.task import LMTask, LMParams; "
            f"LMTask.check(LMParams(model={str(tiny_gguf(tmp_path / 'm.gguf'))!r}, context=64)); "
            "bad = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]; print(bad); "
            "sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_static_reading_of_transformers_tables_matches_transformers():
    from transformers.models.auto import configuration_auto, modeling_auto

    from orchestrator.tasks.checks import library

    assert library.names("CONFIG_MAPPING_NAMES") == set(configuration_auto.CONFIG_MAPPING_NAMES)
    assert library.names("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES") == set(modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    assert library.names("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES") == set(
        modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)
    assert "llama" in library.gguf_architectures()


def test_every_built_in_task_defines_the_contract():
    from orchestrator.tasks import TASKS

    assert {name: cls.missing() for name, cls in TASKS.items() if cls.missing()} == {}
