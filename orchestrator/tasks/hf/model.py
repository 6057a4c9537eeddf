"""Transformer surgery for Hugging Face encoders: head/FFN pruning support, layer dropping, reload.

Works on BERT-style self-attention (modules with `query`/`key`/`value` linears and
`num_attention_heads`/`attention_head_size`/`all_head_size`: BERT, RoBERTa, ELECTRA, MiniLM, XLM-R...).
The residual width (hidden size) is never pruned: every linear that writes into the residual stream
is protected, so pruning removes whole attention heads and FFN neurons only.

A pruned model no longer matches its config's uniform sizes, so the pruned linears' shapes are
recorded in `config.pruned_linears`; `load_pretrained` rebuilds them after `save_pretrained`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PRUNED_KEY = "pruned_linears"  # config attribute: {linear module name: [out_features, in_features]}


def attentions(model: Any) -> list[Any]:
    """The BERT-style self-attention modules of `model`."""
    import torch

    return [m for m in model.modules()
            if all(isinstance(getattr(m, a, None), torch.nn.Linear) for a in ("query", "key", "value"))
            and hasattr(m, "num_attention_heads") and hasattr(m, "attention_head_size")]


def encoder_layers(model: Any) -> tuple[Any, str, Any]:
    """(parent module, attribute name, ModuleList) of the encoder's layer stack."""
    import torch

    n = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n and name:
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name), attr, module
    raise NotImplementedError(f"cannot find the {n} encoder layers of {type(model).__name__}")


def protected(model: Any) -> list[Any]:
    """Modules pruning must leave alone: everything outside the encoder layers (embeddings, pooler,
    classifier) and, inside them, every linear that writes into the residual stream."""
    import torch

    _, _, layers = encoder_layers(model)
    inside = {id(m) for m in layers.modules()}
    qkv = {id(getattr(a, n)) for a in attentions(model) for n in ("query", "key", "value")}
    outside = [m for m in model.modules()
               if id(m) not in inside and next(m.parameters(recurse=False), None) is not None]
    writers = [m for m in layers.modules() if isinstance(m, torch.nn.Linear)
               and m.out_features == model.config.hidden_size and id(m) not in qkv]
    return outside + writers


def pruning_kwargs(model: Any, ratio: float) -> dict[str, Any]:
    """torch-pruning MetaPruner arguments: remove whole heads at `ratio` (at least one head stays)."""
    atts = attentions(model)
    if not atts:
        return {"output_transform": _logits}  # not BERT-style attention: FFN neurons only
    heads = {lin: att.num_attention_heads for att in atts for lin in (att.query, att.key, att.value)}
    fewest = min(att.num_attention_heads for att in atts)
    # torch-pruning removes ceil(ratio * heads) per layer; cap it so that no layer loses every head
    head_ratio = min(ratio, (fewest - 1) / fewest - 1e-6)
    return {"num_heads": heads, "prune_num_heads": True, "prune_head_dims": False,
            "head_pruning_ratio": head_ratio, "output_transform": _logits}


def _logits(out: Any) -> Any:
    return out.logits if hasattr(out, "logits") else out


def fix_attributes(model: Any) -> Any:
    """Make head counts match the (pruned) linears and record every changed linear shape in the config."""
    for att in attentions(model):
        if att.query.out_features == 0:  # global pruning ranks heads across layers and can empty one
            raise RuntimeError("pruning removed every attention head of a layer: lower stages.prune.ratio "
                               "or set stages.prune.global_pruning=false")
        att.all_head_size = att.query.out_features
        att.num_attention_heads = att.all_head_size // att.attention_head_size
    setattr(model.config, PRUNED_KEY, changed_linears(model))
    return model


def changed_linears(model: Any) -> dict[str, list[int]]:
    """Linears whose shape differs from what the config alone would build (pruned ones)."""
    import torch

    reference = _from_config(model.config, meta=True)
    ref = dict(reference.named_modules())
    return {name: [m.out_features, m.in_features] for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name in ref
            and (ref[name].out_features, ref[name].in_features) != (m.out_features, m.in_features)}


def _from_config(config: Any, meta: bool = False) -> Any:
    """A model of `config`'s architecture (on the meta device: shapes only, no memory)."""
    import contextlib

    import torch
    from transformers import AutoModelForSequenceClassification

    from orchestrator.tasks.hf.vocab import TRIM_KEY, install

    clean = config.__class__.from_dict({k: v for k, v in config.to_dict().items() if k != PRUNED_KEY})
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = AutoModelForSequenceClassification.from_config(clean)
        if getattr(clean, TRIM_KEY, None):  # a trimmed vocabulary: the embedding reads through the id map
            install(model, clean)
        return model


def is_intact(model: Any) -> bool:
    """True when every parameter has the shape the config builds (not pruned; shrinking updates the config)."""
    reference = _from_config(model.config, meta=True)
    ref = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return ref == own


def from_spec(spec: dict[str, Any]) -> Any:
    """A fresh model of a stored config (plain data: no code is named or run), pruned shapes not yet applied."""
    from transformers import CONFIG_MAPPING

    data = {k: v for k, v in dict(spec.get("config") or {}).items() if k != "auto_map"}  # never remote code
    kind = data.get("model_type")
    if kind not in CONFIG_MAPPING:
        from orchestrator.artifacts.torch_io import UnsafeArtifact

        raise UnsafeArtifact(f"stored config has model_type {kind!r}, not a transformers architecture")
    config = CONFIG_MAPPING[kind].from_dict(data)
    model = _from_config(config)
    setattr(model.config, PRUNED_KEY, data.get(PRUNED_KEY) or {})
    return model


def load_pretrained(path: str | Path) -> Any:
    """Reload a model written by `save_pretrained`, pruned or not (pruned shapes come from the config)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    model = _from_config(config)
    for name, (out_f, in_f) in (getattr(config, PRUNED_KEY, None) or {}).items():
        parent, _, attr = name.rpartition(".")
        old = model.get_submodule(name)
        setattr(model.get_submodule(parent), attr, torch.nn.Linear(in_f, out_f, bias=old.bias is not None))
    fix_attributes(model)
    model.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
    return model.eval()


def shrink(model: Any, k: int, count: int = 0) -> Any:
    """Keep every k-th encoder layer counting down from the last, or `count` layers spread evenly
    (DistilBERT-style init from the teacher; see `tasks.base.kept_layers`).

    Counting from the top keeps the last layer, whose output the (fine-tuned) pooler and classifier
    were trained on: 6 layers, k=2 keeps layers 1, 3, 5; k=3 keeps 2, 5; count=4 keeps 1, 2, 4, 5.
    """
    import torch

    from orchestrator.tasks.base import kept_layers

    parent, attr, layers = encoder_layers(model)
    keep = kept_layers(len(layers), k, count)
    setattr(parent, attr, torch.nn.ModuleList(layers[i] for i in keep))
    model.config.num_hidden_layers = len(keep)
    for i, layer in enumerate(getattr(parent, attr)):
        for m in layer.modules():  # cache bookkeeping indexes layers by position
            if hasattr(m, "layer_idx"):
                m.layer_idx = i
    fix_attributes(model)  # renumbers the recorded pruned shapes, if any
    return model
