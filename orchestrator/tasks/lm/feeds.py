"""The input feeds of an LM's KV-cache ONNX graph: ids, mask, positions and the past (empty on a first call).

Scoring (`LMTask.onnx_logits`), decoding speed (lm/measure) and speculative drafting (lm/spec) all run
that graph, so they share this one helper.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PAST = "past_key_values."
# the element types a KV cache is stored in (float32 by the export; see stages/kvcache for the others)
CACHE_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int8)": np.int8,
               "tensor(uint8)": np.uint8}


def complete_feeds(sess: Any, input_ids: np.ndarray, past: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Feeds for the KV-cache graph: the ids, an all-ones mask, positions after `past`, and the past (or empty)."""
    batch, length = input_ids.shape
    start = 0 if not past else cached_tokens(past)
    feeds: dict[str, Any] = {"input_ids": input_ids}
    for arg in sess.get_inputs():
        if arg.name == "attention_mask":
            feeds[arg.name] = np.ones((batch, start + length), dtype=np.int64)
        elif arg.name == "position_ids":
            feeds[arg.name] = np.broadcast_to(np.arange(start, start + length, dtype=np.int64), (batch, length)).copy()
        elif arg.name.startswith(PAST):
            if past:
                feeds[arg.name] = past[arg.name]
            else:
                feeds[arg.name] = np.zeros((batch, arg.shape[1], 0, arg.shape[3]), dtype=CACHE_TYPES[arg.type])
    return feeds


def cached_tokens(past: dict[str, np.ndarray]) -> int:
    """The positions a past holds: its first tensor's, plus its full-precision window in kvcache's grouped layout."""
    first = next(iter(past))
    window = past.get(f"{first}_residual")
    return past[first].shape[2] + (0 if window is None else window.shape[2])
