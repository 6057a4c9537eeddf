"""LLM leaves measured where people run them, on tinylm: GGUF in llama.cpp and GenAI folders in ONNX Runtime GenAI
beside ONNX leaves in ONNX Runtime. The three runtimes agree on the float model (perplexity, greedy text), the
quantized artifacts shrink, the report ranks every format together, and bad input is refused before compute."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import leaf_runs, require_llamacpp, run_cli
from test_lm_cli import TINY
from test_task_checks import refused, tiny_gguf

pytest.importorskip("transformers")
llamacpp = require_llamacpp()


TASK = [a for a in TINY if a.startswith("task")]  # (a distill setting would be refused in a chain without distill)


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    """One llm_runtimes sweep on tinylm: (store, stdout)."""
    root = tmp_path_factory.mktemp("runtimes")
    store = {"cache": str(root / "cache"), "uri": f"sqlite:///{root / 'mlflow.db'}", "artifacts": str(root / "art")}
    # hidden 64: ORT 1.32's k_quant packs zero points wrongly for a weight one block (32) deep
    proc = run_cli(store, "+recipe=llm_runtimes", *TINY, "task.hidden_size=64", "eval.threads=1",
                   "report.register=tiny-llm")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return store, proc.stdout


def _by_variant(store: dict[str, str]) -> dict[str, object]:
    return {r.data.tags.get("orchestrator.variant") or r.data.tags["orchestrator.pipeline"]: r
            for r in leaf_runs(store, "llm_runtimes")}


def test_gguf_leaves_are_measured_in_llamacpp_on_the_same_axes(runtimes) -> None:
    store, stdout = runtimes
    runs = _by_variant(store)
    ggufs = {v: r for v, r in runs.items() if r.data.tags.get("orchestrator.format") == "gguf"}
    assert len(ggufs) == 8, sorted(runs)  # 2 chains x F16, Q8_0, Q4_K_M, Q4_0
    assert {r.data.tags["orchestrator.runtime"] for r in ggufs.values()} == {"llama.cpp"}
    genais = {v: r for v, r in runs.items() if r.data.tags.get("orchestrator.format") == "genai"}
    assert len(genais) == 4, sorted(runs)  # 2 chains x fp32, int4
    assert {r.data.tags["orchestrator.runtime"] for r in genais.values()} == {"ONNX Runtime GenAI"}
    assert runs["quantize"].data.tags["orchestrator.runtime"] == "ONNX Runtime (Python)"
    wanted = {"perplexity", "bits_per_byte", "teacher_agreement", "prefill_ms", "decode_tokens_per_s",
              "decode_latency_p50_ms", "kv_cache_mb_per_1k_tokens", "load_ms", "peak_rss_mb", "model_size_mb",
              "runtime_token_agreement"}
    for variant, run in {**ggufs, **genais}.items():
        assert wanted <= set(run.data.metrics), (variant, sorted(run.data.metrics))
        assert run.data.metrics["runtime_token_agreement"] == 1.0  # our tokenizer, carried by the artifact
    base = runs["baseline"].data.metrics
    f16 = runs["gguf · F16 · llama.cpp"].data.metrics
    # the float model scores the same in llama.cpp as in ONNX Runtime, on the same ids
    assert f16["perplexity"] == pytest.approx(base["perplexity"], rel=0.005)
    assert f16["teacher_agreement"] > 0.98
    q8, q4 = runs["gguf · Q8_0 · llama.cpp"].data.metrics, runs["gguf · Q4_0 · llama.cpp"].data.metrics
    assert q8["perplexity"] == pytest.approx(base["perplexity"], rel=0.03)
    assert q4["model_size_mb"] < q8["model_size_mb"] < f16["model_size_mb"]
    fp32 = runs["genai · fp32 · ONNX Runtime GenAI"].data.metrics
    int4 = runs["genai · int4 · ONNX Runtime GenAI"].data.metrics
    assert fp32["perplexity"] == pytest.approx(base["perplexity"], rel=0.005)
    assert int4["model_size_mb"] < 0.6 * fp32["model_size_mb"]
    assert "gguf · Q4_0 · llama.cpp" in stdout  # the report ranks the GGUF leaves with the ONNX ones


def test_each_gguf_has_an_ollama_modelfile_and_is_logged_as_the_node_model(runtimes) -> None:
    store, _ = runtimes
    folders = [p.parent for p in Path(store["cache"]).rglob("model.gguf")]
    assert len(folders) == 8
    for folder in folders:  # Ollama takes the node's folder as it is
        assert (folder / "Modelfile").read_text().startswith("FROM ./model.gguf")
        assert not list(folder.glob("*.tmp"))  # the F16 intermediate is gone
    from mlflow.tracking import MlflowClient

    run = _by_variant(store)["gguf · Q4_K_M · llama.cpp"]
    client = MlflowClient(tracking_uri=store["uri"])
    model = client.get_logged_model(run.data.tags["orchestrator.model_id"])
    names = {Path(f.path).name for f in client.list_logged_model_artifacts(model.model_id)}
    assert {"model.gguf", "Modelfile"} <= names
    version = client.get_model_version("tiny-llm", "1")  # report.register: whichever format won
    picked = client.get_logged_model(version.model_id or version.source.removeprefix("models:/"))
    files = {Path(f.path).name for f in client.list_logged_model_artifacts(picked.model_id)}
    assert files & {"model.gguf", "genai_config.json", "model.onnx", "MLmodel"}, files


def test_the_float_model_generates_the_same_text_in_all_three_runtimes(runtimes) -> None:
    store, _ = runtimes
    from orchestrator.measure.probe import session
    from orchestrator.tasks.lm.measure import greedy_ids
    from orchestrator.tasks.lm.runtimes import greedy

    meta = [json.loads(p.read_text()) for p in Path(store["cache"]).rglob("meta.json")]
    root = next(m for m in meta if m["parent"] is None)
    f16 = next(m for m in meta if m["stage"] == "gguf" and m["params"]["type"] == "F16" and m["parent"] == root["key"])
    prompt = [int(t) for t in np.arange(5, 37)]
    ids = [*prompt, *greedy_ids(session(_node(store, root["key"]) / "measured.onnx", 1), prompt, 32)]
    assert greedy("gguf", _node(store, f16["key"]) / "model.gguf", prompt, 32, threads=1) == ids[len(prompt):]
    fp32 = next(m for m in meta if m["stage"] == "genai" and m["params"]["precision"] == "fp32"
                and m["parent"] == root["key"])
    assert greedy("genai", _node(store, fp32["key"]), prompt, 32) == ids[len(prompt):]  # the GenAI folder


def _node(store: dict[str, str], key: str) -> Path:
    return next(p.parent for p in Path(store["cache"]).rglob("meta.json") if json.loads(p.read_text())["key"] == key)


def test_a_gguf_type_llamacpp_does_not_offer_is_refused(tmp_path: Path) -> None:
    msg = refused(tmp_path, "pipeline=[gguf]", *TASK, "stages.gguf.type=Q3_K")
    assert "stages.gguf.type='Q3_K'" in msg and "Q4_K_M" in msg


def test_a_missing_llamacpp_names_the_install_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_LLAMA_LIB", str(tmp_path / "absent" / "libllama.so"))
    msg = refused(tmp_path, "pipeline=[gguf]", *TASK)
    assert "pipeline='gguf'" in msg and "npm ci --prefix orchestrator/measure/targets/browser" in msg


def test_an_architecture_the_gguf_writer_does_not_know_is_refused(tmp_path: Path) -> None:
    model = tiny_gguf(tmp_path / "m.gguf", arch="gpt2")
    msg = refused(tmp_path, "pipeline=[gguf]", "task=lm", f"task.model={model}", "task.context=64")
    assert "task.model=" in msg and "cannot be written as GGUF" in msg


def test_nothing_can_follow_a_gguf(tmp_path: Path) -> None:
    msg = refused(tmp_path, "pipeline=[gguf,quantize]", *TASK)
    assert "gguf" in msg and "quantize" in msg


def test_a_gguf_whose_rebuilt_tokenizer_splits_text_otherwise_is_refused(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers rebuilds a GGUF's tokenizer without its pre-tokenizer: llama.cpp splits by the GGUF's
    (here llama3's digit rule), so the ids would differ from a llama.cpp user's on 8% of the test text."""
    from orchestrator.artifacts import gguf_vocab, gguf_write
    from orchestrator.tasks.lm.tinylm import TinyLM, TinyLMParams

    task = TinyLM(TinyLMParams(vocab_size=512, hidden_size=32, layers=2, ffn=64, context=64), 0)
    model = task.load_pretrained()
    gguf_write.write(model, task.tokenizer, tmp_path / "same.gguf", "F16")
    monkeypatch.setattr(gguf_vocab, "pre_name", lambda tokenizer: "llama3")
    gguf_write.write(model, task.tokenizer, tmp_path / "other.gguf", "F16")
    msg = refused(tmp_path, "task=lm", f"task.model={tmp_path / 'other.gguf'}", "task.context=64")
    assert "task.model=" in msg and "splits the test text unlike the GGUF's own in llama.cpp" in msg
    assert "% of ids agree" in msg
    from orchestrator.tasks.lm.tokcheck import compare

    assert compare(str(tmp_path / "same.gguf"), "", "text")["agreement"] == 1.0


def test_the_tokenizer_comparison_is_kept_until_the_gguf_changes(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison costs seconds at every preflight: it is kept per file (size, mtime), corpus and libraries."""
    import subprocess

    from orchestrator.artifacts import gguf_write
    from orchestrator.tasks.lm import checks
    from orchestrator.tasks.lm.tinylm import TinyLM, TinyLMParams

    monkeypatch.setenv("ORCHESTRATOR_HOME", str(tmp_path / "home"))
    task = TinyLM(TinyLMParams(vocab_size=512, hidden_size=32, layers=2, ffn=64, context=64), 0)
    path = tmp_path / "m.gguf"
    gguf_write.write(task.load_pretrained(), task.tokenizer, path, "F16")
    params = type("P", (), {"dataset": "", "text_column": "text"})()
    runs = []
    real = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: runs.append(a) or real(*a, **k))
    checks.check_gguf_tokenizer(params, path)
    checks.check_gguf_tokenizer(params, path)
    assert len(runs) == 1 and len(list((tmp_path / "home" / "tokcheck").glob("*.json"))) == 1
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))  # the file changed
    checks.check_gguf_tokenizer(params, path)
    assert len(runs) == 2


def test_a_genai_precision_the_builder_does_not_offer_is_refused(tmp_path: Path) -> None:
    msg = refused(tmp_path, "pipeline=[genai]", *TASK, "stages.genai.precision=int3")
    assert "stages.genai.precision='int3'" in msg and "int4" in msg


def test_a_missing_genai_runtime_names_the_install_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.artifacts import genai
    from orchestrator.errors import ConfigError
    from orchestrator.stages.genai import GenAIParams, GenAIStage
    from orchestrator.tasks.lm.tinylm import TinyLM, TinyLMParams

    def missing() -> None:
        raise genai.RuntimeMissing(f"onnxruntime-genai is not installed: {genai.INSTALL}")

    monkeypatch.setattr(genai, "check_installed", missing)
    with pytest.raises(ConfigError, match=r"pipeline='genai'.*pip install -e \".\[genai\]\""):
        GenAIStage.preflight(GenAIParams(), TinyLM, TinyLMParams())
    assert genai.PRECISIONS == __import__("orchestrator.stages.genai", fromlist=["x"]).PRECISIONS


def test_a_width_the_genai_int4_packing_mishandles_is_refused_in_one_line() -> None:
    """ONNX Runtime 1.32 packs zero points wrongly for an odd number of blocks per input row (33 x 32 crashed the
    builder on a pruned SmolLM2); the stage says so and how to prune instead, before building."""
    import torch

    from orchestrator.errors import ConfigError
    from orchestrator.stages.genai import _check_blocks

    with pytest.raises(ConfigError, match=r"1056 inputs, an odd number of blocks of 32.*multiple_of=64"):
        _check_blocks(torch.nn.Sequential(torch.nn.Linear(1056, 8)), 32)
    _check_blocks(torch.nn.Sequential(torch.nn.Linear(1024, 8)), 32)
