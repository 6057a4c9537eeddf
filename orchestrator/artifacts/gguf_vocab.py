"""The tokenizer half of a GGUF: a Hugging Face byte-level BPE tokenizer as llama.cpp's `gpt2` vocabulary.

What llama.cpp needs beyond the tokens and merges is the name of the pre-tokenizer (`tokenizer.ggml.pre`):
the regex split that runs before BPE, which the GGUF cannot describe, only name. llama.cpp's converter
(`convert_hf_to_gguf.py`, `get_vocab_base_pre`) finds that name by tokenizing a fixed check text and
looking the hash of the ids up in a table of published tokenizers; this module does the same for the
tokenizers we use, and, since a vocabulary trained here (tinylm's) never matches a published hash (the
hash covers token ids, not just the split), also recognizes a pre-tokenizer that is, piece for piece, the
one a known name stands for. Anything else is refused with a reason instead of guessed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# The check text of llama.cpp's convert_hf_to_gguf.py (TextModel.get_vocab_base_pre, ggml-org/llama.cpp),
# written with escapes so that no editor can alter its invisible characters (ZWJ, variation selector).
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) "
    "\U0001f636\u200d\U0001f32b\ufe0f (multiple emojis concatenated) \u2705 \U0001f999\U0001f999 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "\u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001f601 "
    "?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
    "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, "
    "'D you like some tea? We'Ve a'lL"
)

# sha256 of str(tokenizer.encode(CHKTXT)) -> tokenizer.ggml.pre; two entries of the converter's table
# (same source as CHKTXT): openai-community/gpt2 and HuggingFaceTB/SmolLM-135M (SmolLM2 shares its tokenizer).
KNOWN_HASHES = {
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
}

# The pre-tokenizers (tokenizers' JSON, the keys that change the split) those names stand for in llama.cpp
# (llama-vocab.cpp): GPT-2's regex alone; SmolLM's splits every digit first, then GPT-2's regex.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
KNOWN_SPLITS = {
    "gpt-2": [_BYTE_LEVEL],
    "smollm": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL],
}

# llama.cpp's token types (gguf.TokenType)
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


def _backend(tokenizer: Any) -> dict[str, Any] | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return None if backend is None else json.loads(backend.to_str())


def _pieces(pre: dict[str, Any] | None) -> list[dict[str, Any]]:
    if pre is None:
        return []
    return pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]


def pre_name(tokenizer: Any) -> str | None:
    """llama.cpp's name for the tokenizer's pre-tokenizer: by the converter's hash, else by its structure."""
    ids = tokenizer.encode(CHKTXT)  # as the converter: default special tokens, so BOS-adding changes the hash
    name = KNOWN_HASHES.get(hashlib.sha256(str(ids).encode()).hexdigest())
    if name is not None:
        return name
    spec = _backend(tokenizer)
    if spec is None or spec.get("normalizer") is not None or spec["model"].get("byte_fallback"):
        return None  # a normalizer or byte fallback changes tokens in ways the llama.cpp names do not cover
    pieces = _pieces(spec.get("pre_tokenizer"))
    for name, want in KNOWN_SPLITS.items():
        if len(pieces) == len(want) and all(w.items() <= p.items() for w, p in zip(want, pieces, strict=True)):
            return name
    return None


def problem(tokenizer: Any) -> str | None:
    """None when the tokenizer can be written as a llama.cpp `gpt2` vocabulary, else why not."""
    spec = _backend(tokenizer)
    if spec is None:
        return f"{type(tokenizer).__name__} is not a fast (tokenizers) tokenizer; only byte-level BPE is written"
    if spec["model"].get("type") != "BPE" or not any(p.get("type") == "ByteLevel"
                                                      for p in _pieces(spec.get("pre_tokenizer"))):
        return (f"the tokenizer is {spec['model'].get('type')} without a byte-level pre-tokenizer; only byte-level "
                "BPE (llama.cpp's gpt2 vocabulary) is written")
    if pre_name(tokenizer) is None:
        return ("its pre-tokenizer is none llama.cpp knows by name here (known: " + ", ".join(KNOWN_SPLITS)
                + "); a tokenizer rebuilt from a GGUF needs that GGUF as the tokenizer source")
    return None


def _adds(tokenizer: Any, token_id: int | None, first: bool) -> bool:
    """Whether the tokenizer puts `token_id` first (or last) when it adds special tokens (its post-processor)."""
    if token_id is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0 if first else -1] == token_id and len(ids) > len(tokenizer("a", add_special_tokens=False)
                                                                             ["input_ids"])


def add_vocab(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """Tokens, types, merges, special ids and chat template, as the converter's `_set_vocab_gpt2` writes them."""
    pre = pre_name(tokenizer)
    if pre is None:
        raise ValueError(problem(tokenizer) or "unknown pre-tokenizer")
    vocab = tokenizer.get_vocab()
    reverse = {i: t for t, i in vocab.items()}
    if max(reverse) >= vocab_size:
        raise ValueError(f"tokenizer has id {max(reverse)} but the model only {vocab_size} embedding rows")
    added = {i: t for i, t in tokenizer.added_tokens_decoder.items()}
    tokens, types = [], []
    for i in range(vocab_size):  # embedding rows beyond the vocabulary become unused placeholders, as converted
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        token = reverse[i]
        tokens.append(token)
        if i not in added:
            types.append(NORMAL)
        elif added[i].special or (token.startswith("<|") and token.endswith("|>")):
            types.append(CONTROL)
        else:
            types.append(USER_DEFINED)
    merges = _backend(tokenizer)["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]  # tokenizers >= 0.20 stores pairs
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    byte_level = next(p for p in _pieces(_backend(tokenizer).get("pre_tokenizer")) if p.get("type") == "ByteLevel")
    writer.add_add_space_prefix(bool(byte_level.get("add_prefix_space")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, token_id in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                          ("unk", tokenizer.unk_token_id), ("pad", tokenizer.pad_token_id)):
        if token_id is not None:
            getattr(writer, f"add_{key}_token_id")(token_id)
    # written explicitly (the converter copies them only when tokenizer_config.json has them) so that
    # llama.cpp does what the HF tokenizer does instead of its per-vocabulary default
    writer.add_add_bos_token(_adds(tokenizer, tokenizer.bos_token_id, True))
    writer.add_add_eos_token(_adds(tokenizer, tokenizer.eos_token_id, False))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        writer.add_chat_template(template)


def copy_vocab(writer: Any, source: Path) -> None:
    """Every `tokenizer.*` entry of another GGUF, verbatim: the vocabulary llama.cpp already ran with."""
    from gguf import GGUFReader, GGUFValueType

    for key, field in GGUFReader(str(source)).fields.items():
        if key.startswith("tokenizer."):
            sub = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub)
