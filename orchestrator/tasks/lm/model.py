"""Causal-LM model surgery: loading (folder or GGUF), rebuilding from a stored config, structured
pruning of FFN neurons and grouped-query attention heads, layer dropping, and ONNX export with KV cache.

Pruning removes the same number of neurons (and KV groups) from every layer, so the model stays one
transformers config (`intermediate_size`, `num_attention_heads`, `num_key_value_heads`) and saves,
reloads and exports like an unpruned one; which neurons go is decided per layer by importance.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.tasks.hf.export import quiet

IMPORTANCES = ("l1", "activation", "mix")


def load_pretrained(source: str, dtype: str = "float32") -> Any:
    """A causal LM from a save_pretrained folder or a .gguf file (dequantized to float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(source)
    kwargs = {"gguf_file": path.name} if path.suffix == ".gguf" else {}
    folder = path.parent if path.suffix == ".gguf" else path
    with quiet():
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype), **kwargs)
    return model.eval()


def load_tokenizer(source: str) -> Any:
    """The tokenizer of a model folder or of a .gguf file.

    Converting a GGUF's vocabulary takes ~20 s, and every process that scores text needs it, so the
    converted tokenizer is kept as plain JSON files (no code) under `$ORCHESTRATOR_HOME` (default
    ~/.cache/orchestrator), keyed by the file's path, size and modification time.
    """
    import hashlib
    import os

    from transformers import AutoTokenizer

    path = Path(source)
    with quiet():
        if path.suffix != ".gguf":
            return AutoTokenizer.from_pretrained(str(path))
        stat = path.stat()
        tag = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        home = Path(os.environ.get("ORCHESTRATOR_HOME") or Path.home() / ".cache" / "orchestrator")
        kept = home / "gguf-tokenizers" / tag
        if (kept / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(str(kept))
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        partial = kept.with_name(f"{tag}.{os.getpid()}.part")
        try:
            tokenizer.save_pretrained(str(partial))
            partial.rename(kept)  # whole or not at all; a concurrent writer's copy is as good
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
        return tokenizer


def from_spec(spec: dict[str, Any]) -> Any:
    """A fresh causal LM of a stored config (plain data; `auto_map` dropped, so no remote code runs)."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    data = {k: v for k, v in dict(spec.get("config") or {}).items() if k != "auto_map"}
    kind = data.get("model_type")
    if kind not in CONFIG_MAPPING:
        from orchestrator.artifacts.torch_io import UnsafeArtifact

        raise UnsafeArtifact(f"stored config has model_type {kind!r}, not a transformers architecture")
    return AutoModelForCausalLM.from_config(CONFIG_MAPPING[kind].from_dict(data)).eval()


def layers(model: Any) -> Any:
    """The decoder layers (Llama-style `model.model.layers`)."""
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers"):
        raise ValueError(f"{type(model).__name__} has no model.layers: structured LM pruning needs a "
                         "Llama-style decoder (Llama, Mistral, Qwen2, SmolLM, ...)")
    return inner.layers


def scale_groups(model: Any) -> list[Any]:
    """The Linears of each decoder layer grouped by the op whose output they read, for activation-aware
    scaling (orchestrator.artifacts.awq): q/k/v after the attention norm, o after v (grouped-query heads
    repeated), gate/up after the MLP norm, down after up. The head and the embeddings are left alone."""
    from orchestrator.artifacts.awq import ScaleGroup

    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    groups = []
    for i, layer in enumerate(layers(model)):
        attn, mlp = layer.self_attn, layer.mlp
        groups.append(ScaleGroup(f"layers.{i}.attn_in", layer.input_layernorm,
                                 [("q_proj", attn.q_proj), ("k_proj", attn.k_proj), ("v_proj", attn.v_proj)],
                                 no_clip=("q_proj", "k_proj")))
        v_out, o_in = attn.v_proj.out_features, attn.o_proj.in_features
        if o_in % v_out == 0 and v_out % head_dim == 0:
            groups.append(ScaleGroup(f"layers.{i}.attn_out", attn.v_proj, [("o_proj", attn.o_proj)],
                                     repeat=o_in // v_out, head_dim=head_dim))
        groups.append(ScaleGroup(f"layers.{i}.mlp_in", layer.post_attention_layernorm,
                                 [("gate_proj", mlp.gate_proj), ("up_proj", mlp.up_proj)]))
        groups.append(ScaleGroup(f"layers.{i}.mlp_out", mlp.up_proj, [("down_proj", mlp.down_proj)]))
    return groups


def _normalized(score: Any) -> Any:
    return score / score.mean().clamp_min(1e-12)


def ffn_importance(model: Any, how: str, activations: list[Any] | None) -> list[Any]:
    """Per layer, one score per FFN neuron: L1 of its weights, mean |activation| on calibration text, or the mix."""
    scores = []
    for i, layer in enumerate(layers(model)):
        mlp = layer.mlp
        l1 = mlp.gate_proj.weight.abs().sum(1) + mlp.up_proj.weight.abs().sum(1) + mlp.down_proj.weight.abs().sum(0)
        if how == "l1":
            scores.append(l1)
        elif how == "activation":
            scores.append(activations[i])
        else:  # the paper's 0.5 L1 + 0.5 activation, each scaled to mean 1 so neither dominates by units
            scores.append(0.5 * _normalized(l1) + 0.5 * _normalized(activations[i]))
    return scores


def ffn_activations(model: Any, batches: list[Any]) -> list[Any]:
    """Mean |input of down_proj| per neuron and layer over the calibration batches (forward hooks)."""
    import torch

    sums: list[Any] = [None] * len(layers(model))
    count = [0]

    def hook(i: int) -> Any:
        def keep(_module: Any, args: tuple) -> None:
            a = args[0].detach().abs().reshape(-1, args[0].shape[-1])
            sums[i] = a.sum(0) if sums[i] is None else sums[i] + a.sum(0)
            if i == 0:
                count[0] += a.shape[0]
        return keep

    handles = [layer.mlp.down_proj.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers(model))]
    try:
        with torch.no_grad():
            for inputs in batches:
                model(**inputs, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return [s / max(count[0], 1) for s in sums]


def _keep_rows(linear: Any, idx: Any, dim: int) -> None:
    """Slice `linear`'s weight (and bias) to the indices `idx` along output (0) or input (1) features."""
    import torch

    with torch.no_grad():
        linear.weight = torch.nn.Parameter(linear.weight.index_select(dim, idx).clone())
        if dim == 0 and linear.bias is not None:
            linear.bias = torch.nn.Parameter(linear.bias.index_select(0, idx).clone())
    if dim == 0:
        linear.out_features = len(idx)
    else:
        linear.in_features = len(idx)


def prune_ffn(model: Any, ratio: float, scores: list[Any], multiple_of: int = 1) -> int:
    """Remove `ratio` of every layer's FFN neurons (the least important), the kept count rounded down to a
    multiple of `multiple_of` (block quantizers need it: GGUF's Q4_0 / Q8_0 32, its K-quants 256, else they
    fall back to wider types for the FFN-down weights); returns the neurons kept per layer."""
    import torch

    width = model.config.intermediate_size
    keep = max(1, round(width * (1 - ratio)))
    if multiple_of > 1:
        keep = min(width, max(multiple_of, keep // multiple_of * multiple_of))
    for layer, score in zip(layers(model), scores, strict=True):
        idx = torch.sort(torch.topk(score, keep).indices).values
        _keep_rows(layer.mlp.gate_proj, idx, 0)
        _keep_rows(layer.mlp.up_proj, idx, 0)
        _keep_rows(layer.mlp.down_proj, idx, 1)
    model.config.intermediate_size = keep
    return keep


def prune_kv_groups(model: Any, ratio: float) -> int:
    """Remove `ratio` of every layer's KV heads with their query groups (GQA stays consistent), by weight L1.

    A KV head, the query heads that read it, and their columns of o_proj go together; returns KV heads kept.
    """
    import torch

    cfg = model.config
    kv, heads = cfg.num_key_value_heads, cfg.num_attention_heads
    group, head_dim = heads // kv, getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    keep = max(1, round(kv * (1 - ratio)))
    if keep == kv:
        return kv
    for layer in layers(model):
        att = layer.self_attn
        score = torch.stack([
            att.k_proj.weight[g * head_dim:(g + 1) * head_dim].abs().sum()
            + att.v_proj.weight[g * head_dim:(g + 1) * head_dim].abs().sum()
            + att.q_proj.weight[g * group * head_dim:(g + 1) * group * head_dim].abs().sum()
            + att.o_proj.weight[:, g * group * head_dim:(g + 1) * group * head_dim].abs().sum() for g in range(kv)])
        groups = torch.sort(torch.topk(score, keep).indices).values.tolist()
        kv_idx = torch.tensor([g * head_dim + d for g in groups for d in range(head_dim)])
        q_idx = torch.tensor([(g * group + h) * head_dim + d for g in groups for h in range(group)
                              for d in range(head_dim)])
        _keep_rows(att.k_proj, kv_idx, 0)
        _keep_rows(att.v_proj, kv_idx, 0)
        _keep_rows(att.q_proj, q_idx, 0)
        _keep_rows(att.o_proj, q_idx, 1)
    cfg.head_dim = head_dim  # before: derived from hidden / heads, which no longer holds
    cfg.num_key_value_heads, cfg.num_attention_heads = keep, keep * group
    for layer in layers(model):
        layer.self_attn.head_dim = head_dim
        if hasattr(layer.self_attn, "num_key_value_groups"):
            layer.self_attn.num_key_value_groups = group
    return keep


def shrink(model: Any, k: int, count: int = 0) -> Any:
    """Keep every k-th decoder layer counting down from the last, or `count` of them spread evenly
    (`tasks.base.kept_layers`); the cache indexes layers by position."""
    import torch

    from orchestrator.tasks.base import kept_layers

    inner = model.model
    keep = kept_layers(len(inner.layers), k, count)
    inner.layers = torch.nn.ModuleList(inner.layers[i] for i in keep)
    model.config.num_hidden_layers = len(keep)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]
    for i, layer in enumerate(inner.layers):
        for m in layer.modules():
            if hasattr(m, "layer_idx"):
                m.layer_idx = i
    return model


def export_with_past(model: Any, path: Path, opset: int) -> None:
    """optimum's `text-generation-with-past` export: input_ids, attention_mask, position_ids and the
    past key/values in, logits and the present key/values out (one graph; an empty past = a prefill)."""
    from optimum.exporters.onnx import onnx_export_from_model

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, quiet():
        onnx_export_from_model(model.eval(), tmp, opset=opset, task="text-generation-with-past",
                               do_validation=False)
        produced = Path(tmp) / "model.onnx"
        if (Path(tmp) / "model.onnx_data").exists():  # > 2 GB: external data, moved beside the graph
            shutil.move(str(Path(tmp) / "model.onnx_data"), str(path.with_name("model.onnx_data")))
        shutil.move(str(produced), str(path))
