"""Importance matrices for llama.cpp's quantizer on tinylm: ggml's row quantizer is the one llama_model_quantize
calls (same bytes without a matrix), a planted important column is rounded better with one, the patched GGUF
still runs in llama.cpp, the `gguf` stage reads calibration windows only, and the option is keyed where it applies."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import require_llamacpp
from test_accuracy_control import SplitSpy, ctx

pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
llamacpp = require_llamacpp()

PLANTED, COLUMN = "blk.0.ffn_up.weight", 5


@pytest.fixture(scope="module")
def lm() -> Any:
    from orchestrator.tasks.lm.tinylm import TinyLM, TinyLMParams

    return TinyLM(TinyLMParams(vocab_size=512, hidden_size=64, layers=2, heads=4, kv_heads=2, ffn=96, context=64,
                               train_tokens=20000, eval_tokens=2048, batch_size=8, calib_windows=8), seed=0)


@pytest.fixture(scope="module")
def files(lm: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The baseline as F16 GGUF, quantized to Q4_0 plainly and with an importance matrix that has one planted
    column (x10^4 in PLANTED)."""
    from orchestrator.artifacts import gguf_write, imatrix

    work = tmp_path_factory.mktemp("imatrix")
    model = copy.deepcopy(lm.build_baseline())
    tokenizer, source = lm.gguf_tokenizer()
    f16 = work / "f16.gguf"
    gguf_write.write(model, tokenizer, f16, "F16", tokenizer_source=source)
    matrix = imatrix.collect(gguf_write.matmul_weights(model), model, (x for x, _ in lm.batches("calib", 4)),
                             lm.forward)
    matrix[PLANTED][COLUMN] *= 1e4
    plain, weighted = work / "plain.gguf", work / "weighted.gguf"
    llamacpp.quantize(f16, plain, "Q4_0")
    metrics = llamacpp.quantize(f16, weighted, "Q4_0", imatrix=imatrix.save(matrix, work / "m.npz"))
    return {"f16": f16, "plain": plain, "weighted": weighted, "metrics": metrics, "matrix": matrix}


def _tensors(path: Path) -> dict[str, Any]:
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def test_ggml_row_quantizer_is_what_llama_model_quantize_runs(files: dict[str, Any]) -> None:
    from orchestrator.artifacts import llamacpp_abi

    lib = llamacpp_abi.load(llamacpp.lib_path())
    src, plain = _tensors(files["f16"]), _tensors(files["plain"])
    q4 = [name for name, t in plain.items() if t.tensor_type == gguf.GGMLQuantizationType.Q4_0]
    assert len(q4) == 14  # 7 Linears x 2 layers; the untied head is Q8_0 at this width
    for name in q4:
        rows = np.ascontiguousarray(src[name].data, dtype=np.float32)
        buf = np.empty(int(plain[name].n_bytes), np.uint8)
        n = lib.ggml_quantize_chunk(int(plain[name].tensor_type), rows.ctypes.data, buf.ctypes.data, 0,
                                    rows.shape[0], rows.shape[1], None)
        assert n == plain[name].n_bytes and np.array_equal(buf, np.asarray(plain[name].data).reshape(-1)), name


def test_the_matrix_rounds_the_important_columns_better(files: dict[str, Any]) -> None:
    assert files["metrics"]["imatrix_tensors"] == 14 and files["metrics"]["imatrix_skipped"] == 1  # the Q8_0 head
    assert files["plain"].stat().st_size == files["weighted"].stat().st_size
    src, plain, weighted = _tensors(files["f16"]), _tensors(files["plain"]), _tensors(files["weighted"])

    def error(t: Any, name: str) -> Any:  # squared rounding error per (row, column)
        w = np.asarray(src[name].data, dtype=np.float32)
        return (gguf.quants.dequantize(t.data, t.tensor_type).reshape(w.shape) - w) ** 2

    changed = 0
    for name in files["matrix"]:
        if name not in plain or plain[name].tensor_type != gguf.GGMLQuantizationType.Q4_0:
            continue
        imp = files["matrix"][name]
        before, after = error(plain[name], name), error(weighted[name], name)
        changed += not np.array_equal(np.asarray(plain[name].data), np.asarray(weighted[name].data))
        if name != PLANTED:  # weighted by importance, the searched scales lose less than rounding by the maximum
            assert (after * imp).sum() < (before * imp).sum(), name
    assert changed == 14
    before, after = error(plain[PLANTED], PLANTED), error(weighted[PLANTED], PLANTED)
    assert after[:, COLUMN].sum() < 0.2 * before[:, COLUMN].sum()


def test_the_weighted_gguf_runs_in_llamacpp(files: dict[str, Any], lm: Any, tmp_path: Path) -> None:
    ids = np.concatenate([np.asarray(x["input_ids"]).reshape(-1) for x, _ in lm.batches("test", 4)])[:2 * 65]
    np.save(tmp_path / "w.npy", ids.reshape(2, 65).astype(np.int32))
    out = {name: llamacpp.measure_child(
        {"model": str(files[name]), "threads": 1, "windows": str(tmp_path / "w.npy"), "prompt": ids[:16].tolist(),
         "decode_steps": 2, "warmup_steps": 1, "prefill_repeats": 1, "out_dir": str(tmp_path / name)}, 120)
        for name in ("plain", "weighted")}
    assert out["weighted"]["tokens"] == 128 and np.isfinite(out["weighted"]["nll"])
    assert abs(out["weighted"]["nll"] / out["plain"]["nll"] - 1) < 0.1  # the same model, rounded otherwise


def test_the_stage_reads_calibration_windows_only(lm: Any, tmp_path: Path) -> None:
    from orchestrator.stages.gguf import GGUFParams, GGUFStage

    spy = SplitSpy(lm)
    out = GGUFStage(GGUFParams(type="IQ4_NL", imatrix=True)).run(ctx(spy, tmp_path), copy.deepcopy(lm.build_baseline()))
    assert spy.read == {"calib"}
    assert out.metrics["imatrix_tensors"] == 14
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Modelfile", "model.gguf"]  # nothing else left behind


def test_the_matrix_is_keyed_only_where_it_applies() -> None:
    from orchestrator.stages.gguf import GGUFStage

    plan = GGUFStage.plan_params
    assert plan({"type": "Q4_0", "imatrix": True}, {}, (), "gguf") == {"type": "Q4_0", "imatrix": True}
    assert plan({"type": "Q4_0", "imatrix": False}, {}, (), "gguf") == {"type": "Q4_0"}  # keys made before hold
    for unweighted in ("F16", "Q8_0"):  # no scales to search: one node with or without
        assert plan({"type": unweighted, "imatrix": True}, {}, (), "gguf") == {"type": unweighted}
    assert plan({"imatrix": True}, {}, (), "gguf") == {"imatrix": True}  # the default type, Q4_K_M, weighs columns
    # a variant's label says what it ships
    assert GGUFStage.deployed_as({"type": "Q4_0", "imatrix": True}) == "Q4_0 imatrix · llama.cpp"
    assert GGUFStage.deployed_as({"type": "Q4_0"}) == "Q4_0 · llama.cpp"
