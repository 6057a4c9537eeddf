"""ONNX Runtime GenAI on a real (tiny) Llama: the builder's fp32 model scores and decodes as torch does."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("transformers")
if importlib.util.find_spec("onnxruntime_genai") is None:
    pytest.skip('onnxruntime-genai is not installed (pip install -e ".[genai]")', allow_module_level=True)

from orchestrator.artifacts import genai  # noqa: E402
from orchestrator.tasks.lm.tinylm import TinyLM, TinyLMParams  # noqa: E402

TINY = {"vocab_size": 512, "hidden_size": 64, "layers": 2, "heads": 2, "kv_heads": 1, "ffn": 64, "context": 64,
        "train_tokens": 8192, "eval_tokens": 1024, "batch_size": 8}
STEPS = 32


def _nll(logits: np.ndarray, labels: np.ndarray) -> float:
    x = logits.astype(np.float64)
    top = x.max(-1, keepdims=True)
    return float((np.log(np.exp(x - top).sum(-1)) + top[:, 0] - x[np.arange(len(labels)), labels]).sum())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The trained tinylm saved as a Hugging Face folder, its test windows, and torch's answers on them."""
    import torch

    lm = TinyLM(TinyLMParams(**TINY), seed=0)
    model = lm.build_baseline()
    root = tmp_path_factory.mktemp("genai")
    model.save_pretrained(root / "hf")
    lm.tokenizer.save_pretrained(root / "hf")
    ids = lm.splits["test"].ids
    np.save(root / "windows.npy", ids)
    prompt = ids.reshape(-1)[:128].tolist()
    with torch.no_grad():
        logits = model(torch.from_numpy(ids[:, :-1])).logits.numpy()
        seq, greedy = torch.tensor([prompt]), []
        for _ in range(STEPS):  # greedy with EOS held back, as the GenAI side decodes (min_length)
            step = model(seq).logits[0, -1]
            step[model.config.eos_token_id] = -float("inf")
            greedy.append(int(step.argmax()))
            seq = torch.cat([seq, torch.tensor([[greedy[-1]]])], 1)
    nll = sum(_nll(lg, row[1:]) for lg, row in zip(logits, ids, strict=True))
    return {"root": root, "hf": root / "hf", "windows": root / "windows.npy", "prompt": prompt, "greedy": greedy,
            "ppl": float(np.exp(nll / ids[:, 1:].size)), "top1": logits.argmax(-1).reshape(-1),
            "text_ids": lm.tokenizer("def f(x): return x", add_special_tokens=False)["input_ids"]}


def _request(tiny: dict[str, Any], folder: Path) -> dict[str, Any]:
    return {"model": folder, "threads": 1, "windows": tiny["windows"], "prompt": tiny["prompt"], "decode_steps": 8,
            "warmup_steps": 2, "prefill_repeats": 2, "text": "def f(x): return x",
            "greedy": {"prompt": tiny["prompt"], "tokens": STEPS}, "out_dir": folder.parent / f"{folder.name}-answer"}


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("model.onnx*"))


def test_fp32_build_scores_and_decodes_as_torch(tiny: dict[str, Any]) -> None:
    out = tiny["root"] / "fp32"
    genai.build(tiny["hf"], out, "fp32")
    assert {"model.onnx", "genai_config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    answer = genai.measure_child(_request(tiny, out), timeout_s=300)
    assert answer["tokens"] == tiny["top1"].size
    assert np.exp(answer["nll"] / answer["tokens"]) == pytest.approx(tiny["ppl"], rel=0.005)
    assert (np.load(answer["top1"]) == tiny["top1"]).mean() > 0.99
    assert answer["greedy_ids"] == tiny["greedy"]
    assert answer["text_ids"] == tiny["text_ids"]  # the folder's own tokenizer, through og
    assert len(answer["prefill_ms"]) == 2 and len(answer["decode_ms"]) == 8 and answer["load_ms"] > 0
    # fp32 K and V, 2 layers x 1 KV head x head_dim 32
    assert answer["kv_bytes_per_token"] == 2 * 2 * 1 * 32 * 4 and answer["n_vocab"] == 512
    assert 0 < answer["peak_rss_mb"] < 1000  # the child's own peak, not this test process's


def test_int4_build_is_smaller_and_still_scores(tiny: dict[str, Any]) -> None:
    fp32, int4 = tiny["root"] / "fp32", tiny["root"] / "int4"
    if not fp32.exists():
        genai.build(tiny["hf"], fp32, "fp32")
    genai.build(tiny["hf"], int4, "int4", "k_quant", block_size=32)
    assert _size(int4) < 0.5 * _size(fp32)
    request = _request(tiny, int4) | {"text": None, "greedy": None, "decode_steps": 2}
    answer = genai.measure_child(request, timeout_s=300)
    assert np.exp(answer["nll"] / answer["tokens"]) == pytest.approx(tiny["ppl"], rel=0.05)


def test_a_failing_build_carries_the_builders_error(tiny: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision"):
        genai.build(tiny["hf"], tmp_path / "x", "int3")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-model"}')
    with pytest.raises(RuntimeError, match="GenAI builder .* failed"):
        genai.build(broken, tmp_path / "y", "fp32", timeout_s=120)


def test_runtime_missing_names_the_install_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)  # Python's own way to make an import fail
    with pytest.raises(genai.RuntimeMissing, match=r'pip install -e "\.\[genai\]"'):
        genai.check_installed()
    assert genai.versions()["onnxruntime-genai"] == genai.PINNED
