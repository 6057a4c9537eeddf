"""Vocabulary trimming for Hugging Face encoders: cut the embedding table to the tokens a task uses.

Half of a small encoder's weights can be its embedding table (MiniLM: 11.7M of 22.7M), and a classifier
for one domain reads a fraction of its rows. Trimming keeps the rows of the kept tokens and maps every
other token to the `[UNK]` row.

The id map travels inside the model. A trimmed model's input embedding is a `TrimmedEmbedding`: the
tokenizer stays the original one, and its ids go through `remap` (original id -> row, an int32 buffer)
before the lookup. Every later stage, a distillation teacher that was never trimmed, the ONNX export (a
Gather on the map, then the Gather on the table) and every measurement therefore feed the same
tokenizer's ids, and the trimmed model can never be fed ids of the wrong vocabulary. On a text whose
tokens were all kept, the trimmed model computes exactly what the untrimmed one did.

The config records it as plain data: `vocab_size` is the number of kept rows and `trimmed_from` the
original vocabulary size (the length of `remap`), so a stored model is rebuilt without code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

TRIM_KEY = "trimmed_from"  # config attribute: the tokenizer's vocabulary size (the length of the id map)


class TrimmedEmbedding(torch.nn.Embedding):
    """An embedding table of the kept tokens, looked up by the original tokenizer's ids through `remap`."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 source_vocab: int = 1) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.register_buffer("remap", torch.zeros(source_vocab, dtype=torch.int32))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return super().forward(self.remap[input_ids])


def install(model: Any, config: Any) -> None:
    """Give a freshly built model of a trimmed config its TrimmedEmbedding (the weights come on load)."""
    old = model.get_input_embeddings()
    # padding_idx (a row; it only masks the pad row's gradient) is restored from the stored module attributes
    model.set_input_embeddings(TrimmedEmbedding(old.num_embeddings, old.embedding_dim, None,
                                                int(getattr(config, TRIM_KEY))))


def id_map(model: Any) -> np.ndarray:
    """Original token id -> embedding row (the identity for an untrimmed model)."""
    emb = model.get_input_embeddings()
    if isinstance(emb, TrimmedEmbedding):
        return emb.remap.numpy().astype(np.int64)
    return np.arange(emb.num_embeddings)


def trim_with(tokenizer: Any, model: Any, keep: np.ndarray, where: str) -> Any:
    """`trim` to the ids `keep` plus the tokenizer's special tokens, dropped ids reading its unknown token."""
    if tokenizer.unk_token_id is None:
        raise ValueError(f"the tokenizer of {where} has no unknown token to map dropped tokens to; "
                         "stages.trim needs one (WordPiece [UNK], SentencePiece <unk>)")
    specials = np.asarray(tokenizer.all_special_ids, dtype=np.int64)
    return trim(model, np.union1d(keep, specials), tokenizer.unk_token_id, tokenizer.pad_token_id)


def trim(model: Any, keep: np.ndarray, unk_id: int, pad_id: int | None) -> Any:
    """Keep the rows of the original token ids `keep` (plus [UNK]'s); every other id reads [UNK]'s row.

    Works on an already trimmed model too: ids it had mapped to [UNK] stay there.
    """
    emb = model.get_input_embeddings()
    source = id_map(model)
    rows = np.unique(source[np.r_[np.asarray(keep, dtype=np.int64), unk_id]])
    new_row = np.full(emb.num_embeddings, -1, dtype=np.int64)
    new_row[rows] = np.arange(len(rows))
    remap = new_row[source]
    remap[remap < 0] = new_row[source[unk_id]]
    padding = int(remap[pad_id]) if pad_id is not None else None
    fresh = TrimmedEmbedding(len(rows), emb.embedding_dim, padding, len(source))
    with torch.no_grad():
        fresh.weight.copy_(emb.weight[torch.from_numpy(rows)])
        fresh.remap.copy_(torch.from_numpy(remap.astype(np.int32)))
    model.set_input_embeddings(fresh)
    model.config.vocab_size = len(rows)
    setattr(model.config, TRIM_KEY, len(source))  # config.pad_token_id stays: inputs are still original ids
    return model
