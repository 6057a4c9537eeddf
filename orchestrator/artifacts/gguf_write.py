"""GGUF export of an in-memory Llama-family causal LM (F32 or F16), for llama.cpp and Ollama.

Owns the model half of a GGUF (hyperparameters, tensor names and layouts) and the Ollama `Modelfile`;
the tokenizer half is `gguf_vocab`. The file matches what llama.cpp's `convert_hf_to_gguf.py` writes
for the `llama` architecture, with one difference that pruning needs: shapes are read from the
tensors, not the config, so a model whose layers were pruned to different FFN widths or head counts
gets per-layer arrays (llama.cpp's `load_hparams` reads feed_forward_length, head_count and
head_count_kv with `get_key_or_arr`) under llama.cpp's `deci` architecture, the one that builds each
layer at its own width. Quantizing further (Q8_0, Q4_K_M, ...) is llama.cpp's job.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orchestrator.artifacts import gguf_vocab

ARCHITECTURES = ("LlamaForCausalLM",)  # SmolLM/SmolLM2 are Llamas
DTYPES = ("F32", "F16")


def _config(model_or_config: Any) -> dict[str, Any]:
    if isinstance(model_or_config, dict):
        return model_or_config
    config = getattr(model_or_config, "config", model_or_config)
    data = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
    if not isinstance(model_or_config, dict) and hasattr(model_or_config, "config"):
        data["architectures"] = [type(model_or_config).__name__]  # the class in hand, not the config's claim
    return data


def unsupported(model_or_config: Any, tokenizer: Any = None) -> str | None:
    """None when `write` can export this model (a model, its config, or a config.json dict), else why not.

    With a tokenizer, also checks that it can be written as a llama.cpp vocabulary.
    """
    cfg = _config(model_or_config)
    archs = cfg.get("architectures") or []
    if cfg.get("model_type") != "llama" or (archs and not set(archs) & set(ARCHITECTURES)):
        return (f"architecture {', '.join(archs) or cfg.get('model_type')!s} is not one the GGUF writer supports "
                f"({', '.join(ARCHITECTURES)})")
    scaling = cfg.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind != "default":
        return f"rope scaling {kind!r} is not written (only unscaled RoPE)"
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        return "attention or MLP biases are not written"
    if cfg.get("hidden_act", "silu") != "silu":
        return f"activation {cfg.get('hidden_act')!r}: llama.cpp's llama architecture computes SiLU"
    return None if tokenizer is None else gguf_vocab.problem(tokenizer)


def _permute(weight: Any, heads: int) -> Any:
    """HF's rotate-half Q/K rows -> llama.cpp's interleaved pairs (the converter's LlamaModel.permute)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def _one_or_all(values: list[int]) -> int | list[int]:
    """A scalar when every layer agrees (as the converter writes it), else the per-layer array."""
    return values[0] if len(set(values)) == 1 else values


def _tied(model: Any) -> bool:
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or head.weight is embed.weight:
        return True
    return head.weight.shape == embed.weight.shape and bool((head.weight == embed.weight).all())


def hparams(model: Any) -> dict[str, Any]:
    """The llama.cpp hyperparameters of `model`, with the per-layer widths read from its tensors."""
    cfg, inner = model.config, model.model
    hidden = inner.embed_tokens.weight.shape[1]
    head_dim = getattr(cfg, "head_dim", None) or hidden // cfg.num_attention_heads
    attn = [layer.self_attn for layer in inner.layers]
    return {
        "context_length": cfg.max_position_embeddings, "embedding_length": hidden, "block_count": len(attn),
        "feed_forward_length": _one_or_all([layer.mlp.gate_proj.weight.shape[0] for layer in inner.layers]),
        "head_count": _one_or_all([a.q_proj.weight.shape[0] // head_dim for a in attn]),
        "head_count_kv": _one_or_all([a.k_proj.weight.shape[0] // head_dim for a in attn]),
        "head_dim": head_dim, "rope_freq_base": float(getattr(cfg, "rope_theta", 10000.0)),
        "rms_eps": float(cfg.rms_norm_eps), "vocab_size": inner.embed_tokens.weight.shape[0],
    }


def matmul_weights(model: Any) -> dict[str, Any]:
    """The Linears whose weights llama.cpp multiplies with activations, by GGUF tensor name (the tensors an
    importance matrix speaks of). A tied head is left out: the file has no `output.weight` then."""
    inner, out = model.model, {}
    for i, layer in enumerate(inner.layers):
        att, mlp = layer.self_attn, layer.mlp
        for name, lin in (("attn_q", att.q_proj), ("attn_k", att.k_proj), ("attn_v", att.v_proj),
                          ("attn_output", att.o_proj), ("ffn_gate", mlp.gate_proj), ("ffn_up", mlp.up_proj),
                          ("ffn_down", mlp.down_proj)):
            out[f"blk.{i}.{name}.weight"] = lin
    if not _tied(model):
        out["output.weight"] = model.get_output_embeddings()
    return out


def _tensors(model: Any, head_dim: int) -> list[tuple[str, Any]]:
    """(GGUF name, float32 numpy array) in llama.cpp's names and layouts."""
    inner = model.model

    def arr(t: Any) -> Any:
        return t.detach().float().cpu().numpy()

    out = [("token_embd.weight", arr(inner.embed_tokens.weight))]
    for i, layer in enumerate(inner.layers):
        att, mlp, blk = layer.self_attn, layer.mlp, f"blk.{i}"
        q, k = arr(att.q_proj.weight), arr(att.k_proj.weight)
        out += [(f"{blk}.attn_norm.weight", arr(layer.input_layernorm.weight)),
                (f"{blk}.attn_q.weight", _permute(q, q.shape[0] // head_dim)),
                (f"{blk}.attn_k.weight", _permute(k, k.shape[0] // head_dim)),
                (f"{blk}.attn_v.weight", arr(att.v_proj.weight)),
                (f"{blk}.attn_output.weight", arr(att.o_proj.weight)),
                (f"{blk}.ffn_norm.weight", arr(layer.post_attention_layernorm.weight)),
                (f"{blk}.ffn_gate.weight", arr(mlp.gate_proj.weight)),
                (f"{blk}.ffn_up.weight", arr(mlp.up_proj.weight)),
                (f"{blk}.ffn_down.weight", arr(mlp.down_proj.weight))]
    out.append(("output_norm.weight", arr(inner.norm.weight)))
    if not _tied(model):  # tied: no output tensor, llama.cpp reuses token_embd (as converted)
        out.append(("output.weight", arr(model.get_output_embeddings().weight)))
    return out


def write(model: Any, tokenizer: Any, path: Path, dtype: str = "F16", name: str = "model",
          tokenizer_source: Path | None = None) -> None:
    """Write `model` and `tokenizer` as one GGUF file at `path` (F32, or F16 with norms and 1-D tensors F32).

    `tokenizer_source`: a GGUF whose `tokenizer.*` metadata is copied verbatim instead of converting
    `tokenizer`. Give it for a model read from a GGUF: transformers' rebuild of such a tokenizer loses
    the pre-tokenizer name (SmolLM2's digit split) and adds a BOS the original does not.
    """
    import gguf
    import numpy as np

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: the writer makes {' or '.join(DTYPES)}; quantize with llama.cpp")
    reason = unsupported(model, None if tokenizer_source else tokenizer)
    if reason:
        raise ValueError(f"cannot write a GGUF: {reason}")
    hp = hparams(model)
    path = Path(path)
    partial = path.with_name(f"{path.name}.{os.getpid()}.part")
    # llama.cpp's llama architecture creates every layer's tensors with layer 0's widths (its loader rejects
    # a narrower FFN in another layer); its `deci` architecture (Llama with per-layer FFN widths and head
    # counts, for NAS-pruned Llamas) builds each layer from its own entries, with the same tensors and RoPE
    ragged = any(isinstance(hp[k], list) for k in ("feed_forward_length", "head_count", "head_count_kv"))
    writer = gguf.GGUFWriter(str(partial), "deci" if ragged else "llama")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(hp["context_length"])
    writer.add_embedding_length(hp["embedding_length"])
    writer.add_block_count(hp["block_count"])
    writer.add_feed_forward_length(hp["feed_forward_length"])
    writer.add_head_count(hp["head_count"])
    writer.add_head_count_kv(hp["head_count_kv"])
    writer.add_rope_freq_base(hp["rope_freq_base"])
    writer.add_layer_norm_rms_eps(hp["rms_eps"])
    # the converter writes these when config.json has head_dim (transformers now always saves it);
    # needed whenever pruned heads make head_count * head_dim differ from the embedding width
    writer.add_key_length(hp["head_dim"])
    writer.add_value_length(hp["head_dim"])
    ftype = gguf.LlamaFileType.ALL_F32 if dtype == "F32" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(ftype)
    writer.add_vocab_size(hp["vocab_size"])
    writer.add_rope_dimension_count(hp["head_dim"])
    if tokenizer_source:
        gguf_vocab.copy_vocab(writer, Path(tokenizer_source))
    else:
        gguf_vocab.add_vocab(writer, tokenizer, hp["vocab_size"])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for tname, data in _tensors(model, hp["head_dim"]):
        # the converter keeps norms and every 1-D tensor in F32 in an F16 file (llama.cpp adds them in F32)
        keep32 = dtype == "F32" or data.ndim <= 1 or tname.endswith("_norm.weight")
        writer.add_tensor(tname, np.ascontiguousarray(data, dtype=np.float32 if keep32 else np.float16))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        partial.replace(path)  # whole or not at all: a reader never sees half a file under the final name
    finally:
        partial.unlink(missing_ok=True)


def modelfile(folder: Path, gguf_name: str, chat_template: str | None) -> Path:
    """An Ollama `Modelfile` beside the GGUF in `folder`; returns its path.

    No TEMPLATE is written: Ollama's templates are Go templates and a Jinja chat template does not
    translate reliably, while Ollama reads `tokenizer.chat_template` from the GGUF and maps the
    templates it knows (ChatML and others) itself.
    """
    lines = [f"FROM ./{gguf_name}"]
    if chat_template:
        lines.append("# chat template: none here; Ollama takes it from the GGUF's tokenizer.chat_template metadata")
    else:
        lines.append("# no chat template: a plain completion model")
    path = Path(folder) / "Modelfile"
    path.write_text("\n".join(lines) + "\n")
    return path
