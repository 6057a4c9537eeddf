"""Speculative decoding as a measurement: a node's model drafts, the target node's model verifies.

Greedy, batch 1, ONNX Runtime with a KV cache for both models (`eval.speculative`); a GGUF draft runs in
llama.cpp against the root baseline written as F16 GGUF (`measure_gguf`), in its child process. The loop and
its metrics are orchestrator.artifacts.speculation's, shared by both runtimes; here an ONNX Runtime session
becomes its `Decoder` (`OrtDecoder`: the cache is the graph's present/past tensors, cut back by slicing).

Metrics (prompts: `prompts` windows of PROMPT_TOKENS test tokens, `tokens` new tokens each; the target's
prompt prefill is left out of both timings, the draft's own prefill is counted against speculation):
`spec_acceptance_rate` (accepted draft tokens / proposed), `spec_tokens_per_s`, `spec_target_tokens_per_s`
(the target alone, same loop), `spec_speedup` (the ratio of the two), `spec_tokens_per_round`
(tokens emitted per target call) and `spec_identical` (1.0 when every prompt's text equals the target's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.artifacts import speculation
from orchestrator.tasks.lm.measure import PROMPT_TOKENS, _presents

VERSION = "1"  # bump when what `measure` reports changes
TIMEOUT_S = 3600.0  # a llama.cpp child past this is killed and the measurement fails: nothing hangs silently
Past = dict[str, np.ndarray]


def _step(sess: Any, tokens: list[int], past: Past | None) -> tuple[np.ndarray, Past]:
    """Run `tokens` after `past`: (logits of each of them, the new cache)."""
    from orchestrator.tasks.lm.feeds import complete_feeds

    out = sess.run(None, complete_feeds(sess, np.asarray([tokens], dtype=np.int64), past))
    return out[0][0], _presents(sess, out)


def _cut(past: Past, length: int) -> Past:
    """The cache of the first `length` positions (every cache tensor is [batch, heads, positions, ...]).

    In kvcache's grouped layout (`*_residual` windows) the quantized part stays and the window is cut; a cut
    into the quantized part (more rejected tokens than the window holds) is refused."""
    windows = {k[: -len("_residual")] for k in past if k.endswith("_residual")}
    if not windows:
        return {k: v[:, :, :length] for k, v in past.items()}
    out = dict(past)
    for base in windows:
        quantized = past[base].shape[2]
        if length < quantized:
            raise ValueError(f"speculative decoding: cannot roll {base} back to {length} positions, {quantized} "
                             "are already quantized (raise stages.kvcache.residual above the draft length)")
        out[f"{base}_residual"] = past[f"{base}_residual"][:, :, :length - quantized]
    return out


def _length(past: Past) -> int:
    from orchestrator.tasks.lm.feeds import cached_tokens

    return cached_tokens(past)


class OrtDecoder:
    """An ONNX Runtime session with its KV cache, as speculation's Decoder."""

    def __init__(self, sess: Any) -> None:
        self.sess, self.past = sess, None

    def start(self, prompt: list[int]) -> int:
        self.past = None
        return self.feed(prompt)[-1]

    def feed(self, tokens: list[int], every: bool = False) -> list[int]:
        logits, self.past = _step(self.sess, tokens, self.past)
        return [int(i) for i in logits.argmax(-1)] if every else [int(logits[-1].argmax())]

    def cut(self, length: int) -> None:
        self.past = _cut(self.past, length)


def greedy(sess: Any, prompt: list[int], tokens: int) -> tuple[list[int], float]:
    """The target alone: (its `tokens` greedy tokens after `prompt`, seconds after the prompt's prefill)."""
    return speculation.greedy(OrtDecoder(sess), prompt, tokens)


def speculative(draft: Any, target: Any, prompt: list[int], tokens: int, k: int) -> tuple[list[int], float,
                                                                                              int, int, int]:
    """Draft-then-verify greedy decoding: (tokens, seconds after the target's prefill, accepted, proposed, rounds)."""
    return speculation.speculative(OrtDecoder(draft), OrtDecoder(target), prompt, tokens, k)


def prompts(task: Any, count: int) -> list[list[int]]:
    """`count` prompts of PROMPT_TOKENS consecutive test tokens (fewer if the test split is short)."""
    return task.draft_prompts(count, PROMPT_TOKENS)


def measure(task: Any, draft_path: Path, target_path: Path, spec: dict[str, Any], threads: int) -> dict[str, float]:
    """The `spec_*` metrics of `draft_path` drafting for `target_path` (see the module doc). A GGUF draft is
    measured in llama.cpp (`measure_gguf`)."""
    from orchestrator.measure.probe import session

    if draft_path.suffix == ".gguf":
        return measure_gguf(task, draft_path, target_path, spec, threads)

    draft, target = OrtDecoder(session(draft_path, threads)), OrtDecoder(session(target_path, threads))
    return speculation.measure(draft, target, prompts(task, int(spec["prompts"])), int(spec["tokens"]),
                               int(spec["k"]))


def measure_gguf(task: Any, draft: Path, root_measured: Path, spec: dict[str, Any], threads: int) -> dict[str, float]:
    """A GGUF drafting in llama.cpp for the root baseline, which verifies there as an F16 GGUF written from its
    torch weights (beside `root_measured`, its measured ONNX; see `target_gguf`): the same loop, prompts and
    `spec_*` metrics as in ONNX Runtime, so drafts of both runtimes rank in one table."""
    from orchestrator.artifacts import llamacpp, torch_io

    weights = root_measured.parent / torch_io.WEIGHTS
    if not weights.is_file():
        raise ValueError(f"the root baseline has no torch weights at {weights} to write the verifying GGUF from")
    return llamacpp.speculative_child(draft, target_gguf(task, weights), prompts(task, int(spec["prompts"])),
                                      int(spec["tokens"]), int(spec["k"]), threads, TIMEOUT_S)


_TARGETS: dict[tuple[str, int, int], Path] = {}


def target_gguf(task: Any, weights: Path) -> Path:
    """The model of torch `weights` as an F16 GGUF in a temporary folder removed at exit: written once per
    process and weights file, as every GGUF draft of a sweep verifies with the same one (SmolLM2: about 10 s
    and 270 MB each time)."""
    import atexit
    import shutil
    import tempfile

    from orchestrator.artifacts import gguf_write, torch_io

    key = (str(weights), weights.stat().st_mtime_ns, id(task))
    if key not in _TARGETS:
        folder = Path(tempfile.mkdtemp(prefix="spec-target-"))
        atexit.register(shutil.rmtree, folder, True)
        model = torch_io.load(weights, task)
        tokenizer, source = task.gguf_tokenizer()
        gguf_write.write(model, tokenizer, folder / "target.gguf", "F16", tokenizer_source=source)
        _TARGETS[key] = folder / "target.gguf"
    return _TARGETS[key]
