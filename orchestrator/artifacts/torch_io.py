"""Torch artifacts without pickle: tensors in safetensors, the structure as plain JSON.

A cache may be shared between machines, and `torch.load` of a pickle runs whatever code the file
names. So a torch model is stored as two files that cannot run code when read:

- `model.safetensors`: every tensor of the state dict (shared tensors, e.g. tied embeddings, once);
- `model.json`: plain data: the task's architecture spec (e.g. a transformer's config), and per module
  its class and its plain attributes (ints, floats, strings: `in_features`, `num_attention_heads`, ...).

Loading asks the task for a fresh model of the architecture (`Task.architecture(spec)`), then edits
it to the recorded structure: parameters and buffers are resized to the stored shapes (what pruning
changed), recorded attributes are set where the fresh module has them with the same type, and a
module's class may change only to a registered safe variant of the class it already has (the
fake-quantized Conv2d/Linear). Anything else in the file, an unknown class, a module that the
architecture lacks, is refused with UnsafeArtifact. Then the tensors are loaded strictly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS, STRUCTURE = "model.safetensors", "model.json"
FORMAT = 1
PLAIN = (bool, int, float, str, type(None))


class UnsafeArtifact(ValueError):
    """A stored model whose files are missing, malformed, or ask for something loading must not do."""


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _swaps() -> dict[tuple[str, str], type]:
    """Allowed class changes, (from, to) -> class: a plain Conv2d/Linear to its fake-quantized variant and back."""
    from orchestrator.artifacts import simquant

    pairs = {}
    for base, variant in simquant.SWAP.items():
        pairs[(_qualname(base), _qualname(variant))] = variant
        pairs[(_qualname(variant), _qualname(base))] = base
    return pairs


def _plain(value: Any) -> Any:
    """JSON-able plain data, or None when the value is not plain (objects, tensors, callables)."""
    if isinstance(value, PLAIN):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, PLAIN) for v in value):
        return list(value)
    return None


def describe(model: Any) -> dict[str, dict[str, Any]]:
    """Per module (by name): its class and its plain public attributes."""
    out = {}
    for name, module in model.named_modules():
        attrs = {k: p for k, v in vars(module).items()
                 if not k.startswith("_") and k != "training" and (p := _plain(v)) is not None}
        out[name] = {"class": _qualname(type(module)), "attrs": attrs}
    return out


def save(model: Any, folder: Path, task: Any) -> str:
    """Write `model` into `folder` as model.safetensors + model.json; returns the weights' file name."""
    from safetensors.torch import save_model

    structure = {"format": FORMAT, "architecture": task.architecture_spec(model), "modules": describe(model),
                 "params": int(sum(p.numel() for p in model.parameters()))}
    save_model(model, str(folder / WEIGHTS))
    (folder / STRUCTURE).write_text(json.dumps(structure, sort_keys=True))
    return WEIGHTS


def read_structure(weights: Path) -> dict[str, Any]:
    """The model.json beside `weights`, checked for shape; UnsafeArtifact if it is not one of ours."""
    path = weights.with_name(STRUCTURE)
    try:
        structure = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UnsafeArtifact(f"{path}: cannot read the model structure ({err})") from None
    if not isinstance(structure, dict) or structure.get("format") != FORMAT \
            or not isinstance(structure.get("modules"), dict):
        raise UnsafeArtifact(f"{path}: not a model structure of format {FORMAT}")
    return structure


def param_count(weights: Path) -> int:
    """Parameters of a stored model, from its structure alone (no torch)."""
    return int(read_structure(weights)["params"])


def load(weights: Path, task: Any) -> Any:
    """Rebuild the model stored at `weights` (see the module doc); raises UnsafeArtifact on anything odd."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    if weights.name != WEIGHTS or not weights.is_file():
        raise UnsafeArtifact(f"{weights}: torch models are read only from {WEIGHTS} files")
    structure = read_structure(weights)
    model = task.architecture(structure.get("architecture") or {})
    _restore_modules(model, structure["modules"], weights)
    with safe_open(str(weights), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    _resize(model, shapes)
    missing, unexpected = load_model(model, str(weights), strict=False)
    if missing or unexpected:
        raise UnsafeArtifact(f"{weights}: tensors do not match the structure (missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]})")
    return model.eval()


def _restore_modules(model: Any, modules: dict[str, Any], where: Path) -> None:
    """Set recorded classes (safe variants only) and plain attributes on the fresh architecture."""
    have = dict(model.named_modules())
    if set(modules) != set(have):
        odd = sorted(set(modules) ^ set(have))[:5]
        raise UnsafeArtifact(f"{where}: the stored modules differ from the task's architecture ({odd})")
    swaps = _swaps()
    for name, entry in modules.items():
        module, wanted = have[name], entry.get("class") if isinstance(entry, dict) else None
        current = _qualname(type(module))
        if wanted != current:
            variant = swaps.get((current, wanted))
            if variant is None:
                raise UnsafeArtifact(f"{where}: module {name!r} asks for class {wanted!r}; only {current} "
                                     "or its registered variants may be rebuilt")
            module.__class__ = variant
        extra = getattr(module.__class__, "__annotations__", {})
        for key, value in (entry.get("attrs") or {}).items():
            _set_attr(module, key, value, key in extra, f"{where}: module {name!r} attribute {key!r}")


def _set_attr(module: Any, key: str, value: Any, declared: bool, where: str) -> None:
    """Set an attribute the module already has (same kind of value) or its class declares; else ignore it."""
    if _plain(value) is None:
        raise UnsafeArtifact(f"{where}: not plain data")
    if key in vars(module):
        old = vars(module)[key]
        if isinstance(old, tuple) and isinstance(value, list):
            value = tuple(value)
        if type(old) is not type(value) and not (old is None or value is None):
            return  # the fresh module holds another kind of value there: leave it
        setattr(module, key, value)
    elif declared and not isinstance(value, list):
        setattr(module, key, value)


def _resize(model: Any, shapes: dict[str, tuple[int, ...]]) -> None:
    """Give every parameter/buffer whose stored shape differs an empty tensor of that shape (tied ones stay tied)."""
    import torch

    replaced: dict[int, Any] = {}
    entries = [(n, t, True) for n, t in model.named_parameters(remove_duplicate=False)]
    entries += [(n, t, False) for n, t in model.named_buffers(remove_duplicate=False)]
    for name, tensor, is_param in entries:
        if tensor is None:
            continue
        if id(tensor) not in replaced:
            shape = shapes.get(name)
            if shape is None or tuple(tensor.shape) == shape:
                continue
            fresh = torch.empty(shape, dtype=tensor.dtype)
            replaced[id(tensor)] = torch.nn.Parameter(fresh, tensor.requires_grad) if is_param else fresh
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        (parent._parameters if is_param else parent._buffers)[leaf] = replaced[id(tensor)]
