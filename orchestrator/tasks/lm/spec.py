"""Speculative decoding as a measurement: a node's model drafts, the target node's model verifies.

Greedy, batch 1, ONNX Runtime with a KV cache for both models (`eval.speculative`); a GGUF draft runs in
llama.cpp against the root baseline written as F16 GGUF (`measure_gguf`), the same loop in its child process.
Per round the draft proposes `k` tokens one by one; the target scores the pending token and all `k` proposals
in one call; the longest prefix of proposals that equals the target's own argmax is accepted, plus the target's token
after it (a correction, or a bonus token when all `k` were accepted). Both caches are then cut back to the
accepted tokens, so the text is by construction the target's greedy text, and `spec_identical` checks it
against the target decoding alone on the same prompts, token for token.

Metrics (prompts: `prompts` windows of PROMPT_TOKENS test tokens, `tokens` new tokens each; the target's
prompt prefill is left out of both timings, the draft's own prefill is counted against speculation):
`spec_acceptance_rate` (accepted draft tokens / proposed), `spec_tokens_per_s`, `spec_target_tokens_per_s`
(the target alone, same loop), `spec_speedup` (the ratio of the two), `spec_tokens_per_round`
(tokens emitted per target call) and `spec_identical` (1.0 when every prompt's text equals the target's).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

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


def greedy(sess: Any, prompt: list[int], tokens: int) -> tuple[list[int], float]:
    """The target alone: (its `tokens` greedy tokens after `prompt`, seconds after the prompt's prefill)."""
    logits, past = _step(sess, prompt, None)
    out = [int(logits[-1].argmax())]
    start = time.perf_counter()
    while len(out) < tokens:
        logits, past = _step(sess, out[-1:], past)
        out.append(int(logits[-1].argmax()))
    return out, time.perf_counter() - start


def speculative(draft: Any, target: Any, prompt: list[int], tokens: int, k: int) -> tuple[list[int], float,
                                                                                              int, int, int]:
    """Draft-then-verify greedy decoding: (tokens, seconds after the target's prefill, accepted, proposed, rounds)."""
    logits, t_past = _step(target, prompt, None)
    out = [int(logits[-1].argmax())]  # the last one is always pending: in neither cache yet
    start = time.perf_counter()
    _, d_past = _step(draft, prompt, None)
    d_pending = list(out)  # tokens the draft's cache still lacks
    accepted = proposed = rounds = 0
    while len(out) < tokens:
        proposal, feed = [], d_pending
        for _ in range(k):
            d_logits, d_past = _step(draft, feed, d_past)
            proposal.append(int(d_logits[-1].argmax()))
            feed = proposal[-1:]
        base = _length(t_past)  # positions before the pending token
        t_logits, t_past = _step(target, [out[-1], *proposal], t_past)
        best = t_logits.argmax(-1)
        n = 0
        while n < k and proposal[n] == int(best[n]):
            n += 1
        accepted, proposed, rounds = accepted + n, proposed + k, rounds + 1
        out.extend([*proposal[:n], int(best[n])])
        t_past = _cut(t_past, base + 1 + n)
        if n == k:  # the draft never ran its own last proposal: it is pending for it, with the bonus token
            d_pending = [proposal[-1], out[-1]]
        else:
            d_past, d_pending = _cut(d_past, base + 1 + n), out[-1:]
    return out[:tokens], time.perf_counter() - start, accepted, proposed, rounds


def prompts(task: Any, count: int) -> list[list[int]]:
    """`count` prompts of PROMPT_TOKENS consecutive test tokens (fewer if the test split is short)."""
    return task.draft_prompts(count, PROMPT_TOKENS)


def measure(task: Any, draft_path: Path, target_path: Path, spec: dict[str, Any], threads: int) -> dict[str, float]:
    """The `spec_*` metrics of `draft_path` drafting for `target_path` (see the module doc). A GGUF draft is
    measured in llama.cpp (`measure_gguf`)."""
    from orchestrator.measure.probe import session

    if draft_path.suffix == ".gguf":
        return measure_gguf(task, draft_path, target_path, spec, threads)

    draft, target = session(draft_path, threads), session(target_path, threads)
    k, n, chosen = int(spec["k"]), int(spec["tokens"]), prompts(task, int(spec["prompts"]))
    speculative(draft, target, chosen[0], min(n, 2 * k + 2), k)  # warm both sessions up
    greedy(target, chosen[0], min(n, 2 * k + 2))
    t_time = s_time = 0.0
    accepted = proposed = rounds = identical = 0
    for prompt in chosen:
        reference, seconds = greedy(target, prompt, n)
        t_time += seconds
        text, seconds, a, p, r = speculative(draft, target, prompt, n, k)
        s_time += seconds
        accepted, proposed, rounds = accepted + a, proposed + p, rounds + r
        identical += text == reference
    emitted = len(chosen) * (n - 1)  # the first token comes from the target's prefill in both
    return {"spec_acceptance_rate": accepted / max(proposed, 1),
            "spec_tokens_per_s": emitted / s_time, "spec_target_tokens_per_s": emitted / t_time,
            "spec_speedup": t_time / s_time, "spec_tokens_per_round": emitted / max(rounds, 1),
            "spec_identical": float(identical == len(chosen))}


def measure_gguf(task: Any, draft: Path, root_measured: Path, spec: dict[str, Any], threads: int) -> dict[str, float]:
    """A GGUF drafting in llama.cpp for the root baseline, which verifies there as an F16 GGUF written from its
    torch weights (beside `root_measured`, its measured ONNX) into a temporary folder: the same loop, prompts and
    `spec_*` metrics as in ONNX Runtime, so drafts of both runtimes rank in one table."""
    import tempfile

    from orchestrator.artifacts import gguf_write, llamacpp, torch_io

    weights = root_measured.parent / torch_io.WEIGHTS
    if not weights.is_file():
        raise ValueError(f"the root baseline has no torch weights at {weights} to write the verifying GGUF from")
    model = torch_io.load(weights, task)
    tokenizer, source = task.gguf_tokenizer()
    with tempfile.TemporaryDirectory(prefix="spec-target-") as tmp:
        target = Path(tmp) / "target.gguf"
        gguf_write.write(model, tokenizer, target, "F16", tokenizer_source=source)
        del model
        return llamacpp.speculative_child(draft, target, prompts(task, int(spec["prompts"])), int(spec["tokens"]),
                                          int(spec["k"]), threads, TIMEOUT_S)
