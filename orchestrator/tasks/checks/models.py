"""Model checks: a save_pretrained folder or a GGUF file opened as far as a loader would, minus the weights.

A folder: config.json parses, names a model_type the installed transformers knows with the head the task needs,
the weights are there (safetensors headers whole, shards present; not TensorFlow/Flax only), and so are tokenizer
files. A GGUF file: its header and tensor table (see .gguf), an architecture transformers converts, a tokenizer in
its metadata. Both return the model's longest input (positions), for the task's context check.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.tasks.checks import gguf, library, paths

HEADS = {"causal": ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "causal language model head"),
         "classifier": ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "sequence classification head")}
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
OTHER_FRAMEWORKS = ("tf_model.h5", "flax_model.msgpack", "model.ckpt.index")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
FOLDER_FILES = "config.json, the weights (model.safetensors) and the tokenizer files"


def check_folder(key: str, folder: Path, head: str) -> int | None:
    """A save_pretrained folder with an architecture that has `head` ('causal' or 'classifier'); its positions."""
    names = {p.name for p in folder.iterdir()}
    if not names:
        raise ConfigError(key, str(folder), f"is an empty folder; a model folder holds {FOLDER_FILES}")
    if "config.json" not in names:
        ggufs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".gguf")
        hint = (f"; it holds a GGUF file: give the file itself ({ggufs[0]})" if ggufs else
                f"; a model folder holds {FOLDER_FILES} (written by save_pretrained)")
        raise ConfigError(key, str(folder), f"is not a model folder (no config.json){hint}")
    config = _config(key, folder / "config.json")
    _architecture(key, folder, config, head)
    _weights(key, folder, names)
    if not names & set(TOKENIZER_FILES):
        raise ConfigError(key, str(folder), "has no tokenizer files (tokenizer.json, vocab.txt, vocab.json + "
                          "merges.txt or a SentencePiece .model): save the tokenizer there too "
                          "(tokenizer.save_pretrained)")
    positions = config.get("max_position_embeddings")
    return positions if isinstance(positions, int) else None


def _config(key: str, path: Path) -> dict[str, Any]:
    paths.whole_file(key, path, "a model config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(key, str(path.parent), f"its config.json is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ConfigError(key, str(path.parent), "its config.json is not a JSON object")
    return config


def _architecture(key: str, folder: Path, config: dict[str, Any], head: str) -> None:
    kind, known = config.get("model_type"), library.names("CONFIG_MAPPING_NAMES")
    where = f"transformers {library.transformers_version()}"
    if not isinstance(kind, str) or not kind:
        raise ConfigError(key, str(folder), "its config.json names no model_type, so transformers cannot tell "
                          "the architecture")
    if known and kind not in known:
        remote = " (it needs remote code, which is never run here)" if "auto_map" in config else ""
        raise ConfigError(key, str(folder), f"its model_type {kind!r} is not an architecture {where} knows"
                          f"{remote}; use a supported model or a newer transformers")
    table, what = HEADS[head]
    heads = library.names(table)
    if heads and kind not in heads:
        raise ConfigError(key, str(folder), f"{where} has no {what} for model_type {kind!r}")


def _weights(key: str, folder: Path, names: set[str]) -> None:
    for index in INDEXES:
        if index in names:
            _sharded(key, folder / index)
            return
    present = [n for n in WEIGHTS if n in names]
    if not present:
        other = [n for n in OTHER_FRAMEWORKS if n in names]
        why = (f"holds only {', '.join(other)} (TensorFlow/Flax weights); save PyTorch or safetensors weights"
               if other else "has no weights (model.safetensors or pytorch_model.bin)")
        raise ConfigError(key, str(folder), why)
    for name in present:
        path = folder / name
        paths.whole_file(key, path, "model weights")
        if path.suffix == ".safetensors":
            safetensors_header(key, path)


def _sharded(key: str, index: Path) -> None:
    """Every shard an index names is there and whole."""
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(key, str(index), f"is not a weight index (JSON with a weight_map): {err}") from None
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        raise ConfigError(key, str(index.parent), f"misses {len(missing)} of the {len(shards)} weight shards its "
                          f"index names ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})")
    for shard in shards:
        paths.whole_file(key, index.parent / shard, "model weights")
        if shard.endswith(".safetensors"):
            safetensors_header(key, index.parent / shard)


def safetensors_header(key: str, path: Path) -> None:
    """The safetensors header parses and the file holds every tensor it lists (not cut off)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        raw = handle.read(8)
        length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if not 0 < length <= min(size - 8, 100_000_000):
            raise ConfigError(key, str(path), "is not a safetensors file (its header length is impossible)")
        try:
            header = json.loads(handle.read(length))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, IndexError, AttributeError):
            raise ConfigError(key, str(path), "is not a safetensors file (its header is not a tensor table)") \
                from None
    if 8 + length + end > size:
        raise ConfigError(key, str(path), f"is cut off: its tensors need {8 + length + end:,} bytes, the file "
                          f"has {size:,} (an interrupted download?)")


def check_gguf(key: str, path: Path) -> int | None:
    """A whole GGUF file of an architecture transformers converts, with a tokenizer; its context length."""
    paths.whole_file(key, path, "a GGUF model")
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(key, str(path), 'reading a GGUF file needs the gguf package: pip install -e ".[lm]"')
    try:
        header = gguf.read_header(path)
    except gguf.Corrupt as err:
        raise ConfigError(key, str(path), f"is not a usable GGUF file: {err}") from None
    if not header.tensors:
        raise ConfigError(key, str(path), "is a GGUF file without tensors (a vocabulary-only file?)")
    arch = header.metadata.get("general.architecture")
    known = library.gguf_architectures()
    if known and arch not in known:
        raise ConfigError(key, str(path), f"is a GGUF of architecture {arch!r}, which transformers "
                          f"{library.transformers_version()} cannot convert (it converts: {', '.join(sorted(known))})")
    if "tokenizer.ggml.model" not in header.metadata or "tokenizer.ggml.tokens" not in header.metadata:
        raise ConfigError(key, str(path), "is a GGUF without a tokenizer in its metadata (tokenizer.ggml.*), "
                          "so no tokenizer can be built from it")
    context = header.metadata.get(f"{arch}.context_length")
    return context if isinstance(context, int) else None
