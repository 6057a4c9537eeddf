"""Greedy speculative decoding over any runtime: the loop and its metrics, written once.

A runtime takes part through a `Decoder` (ONNX Runtime sessions in orchestrator.tasks.lm.spec, llama.cpp
contexts in the llama.cpp child). Per round the draft proposes `k` tokens one by one; the target scores the
pending token and all `k` proposals in one call; the longest prefix of proposals that equals the target's own
argmax is accepted, plus the target's token after it (a correction, or a bonus token when all `k` were
accepted). Both caches are then cut back to the accepted tokens, so the text is by construction the target's
greedy text, and `spec_identical` checks it against the target decoding alone, token for token.

Timing: the target's prompt prefill is left out of both loops; the draft's own prefill counts against
speculation (a deployment pays it).
"""

from __future__ import annotations

import time
from typing import Protocol


class Decoder(Protocol):
    """One model with its KV cache, batch 1, greedy."""

    def start(self, prompt: list[int]) -> int:
        """Empty the cache, run `prompt`; the argmax after its last token."""

    def feed(self, tokens: list[int], every: bool = False) -> list[int]:
        """Run `tokens` after what is cached (and cache them); the argmax after each (`every`) or the last."""

    def cut(self, length: int) -> None:
        """Keep the first `length` cached positions only."""


def greedy(target: Decoder, prompt: list[int], tokens: int) -> tuple[list[int], float]:
    """The target alone: its `tokens` greedy ids after `prompt`, and the seconds after the prompt's prefill."""
    out = [target.start(prompt)]
    start = time.perf_counter()
    while len(out) < tokens:
        out.append(target.feed(out[-1:])[-1])
    return out, time.perf_counter() - start


def speculative(draft: Decoder, target: Decoder, prompt: list[int], tokens: int,
                k: int) -> tuple[list[int], float, int, int, int]:
    """Draft-then-verify greedy decoding: (ids, seconds after the target's prefill, accepted, proposed, rounds)."""
    out = [target.start(prompt)]  # the last id is always pending: in neither cache yet
    start = time.perf_counter()
    draft.start(prompt)
    pending, base = list(out), len(prompt)  # ids the draft's cache lacks; positions the target holds
    accepted = proposed = rounds = 0
    while len(out) < tokens:
        proposal, feed = [], pending
        for _ in range(k):
            proposal.append(draft.feed(feed)[-1])
            feed = proposal[-1:]
        best = target.feed([out[-1], *proposal], every=True)
        n = 0
        while n < k and proposal[n] == best[n]:
            n += 1
        accepted, proposed, rounds = accepted + n, proposed + k, rounds + 1
        out.extend([*proposal[:n], best[n]])
        target.cut(base + 1 + n)
        if n == k:  # the draft never ran its own last proposal: pending for it, with the target's bonus id
            pending = [proposal[-1], out[-1]]
        else:
            draft.cut(base + 1 + n)
            pending = out[-1:]
        base += 1 + n
    return out[:tokens], time.perf_counter() - start, accepted, proposed, rounds


def measure(draft: Decoder, target: Decoder, prompts: list[list[int]], tokens: int, k: int) -> dict[str, float]:
    """After a warm-up of both loops: `spec_acceptance_rate` (accepted / proposed), `spec_tokens_per_s`,
    `spec_target_tokens_per_s` (the target alone, same prompts, same loop), `spec_speedup`,
    `spec_tokens_per_round` (ids per target call) and `spec_identical` (1.0: every prompt's text is the
    target's own)."""
    warm = min(tokens, 2 * k + 2)
    speculative(draft, target, prompts[0], warm, k)
    greedy(target, prompts[0], warm)
    t_time = s_time = 0.0
    accepted = proposed = rounds = identical = 0
    for prompt in prompts:
        reference, seconds = greedy(target, prompt, tokens)
        t_time += seconds
        text, seconds, a, p, r = speculative(draft, target, prompt, tokens, k)
        s_time += seconds
        accepted, proposed, rounds = accepted + a, proposed + p, rounds + r
        identical += text == reference
    emitted = len(prompts) * (tokens - 1)  # the first id comes from the target's prefill in both
    return {"spec_acceptance_rate": accepted / max(proposed, 1), "spec_tokens_per_s": emitted / s_time,
            "spec_target_tokens_per_s": emitted / t_time, "spec_speedup": t_time / s_time,
            "spec_tokens_per_round": emitted / max(rounds, 1), "spec_identical": float(identical == len(prompts))}
