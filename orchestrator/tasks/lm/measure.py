"""Measuring a causal LM's ONNX file on ONNX Runtime (the `ort` target for `lm` tasks).

Quality, on the task's fixed test windows (the same tokens for every node):
- `perplexity`: exp(mean next-token negative log-likelihood); `bits_per_byte`: the total NLL in bits over
  the UTF-8 bytes those tokens spell (comparable across tokenizers, e.g. after vocabulary changes);
- `teacher_agreement`: share of test positions whose top-1 next token equals the baseline's.
Speed, batch 1, greedy, through the graph's KV cache, `eval.threads` intra-op threads:
- `prefill_ms`: the median time to the first token after a fixed 128-token prompt;
- `decode_latency_p50_ms` (also reported as `latency_p50_ms`, the report's latency axis) and
  `decode_tokens_per_s`: per generated token, over 32 greedy steps after a warm-up generation;
- `kv_cache_mb_per_1k_tokens`: the bytes of the present key/value tensors the prompt produced, per 1k
  tokens (measured on the outputs, so an fp16 or quantized cache shows its real size).
Size and memory as for every task: `model_size_mb`, `model_size_gzip_mb`, `params`, `sparsity`, and
`load_ms`, `first_inference_ms`, `peak_rss_mb` in a fresh child (prompt, then a batch of test windows).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator import faults

PROMPT_TOKENS, DECODE_STEPS, WARMUP_STEPS, PREFILL_REPEATS = 128, 32, 4, 5
LOGIT_BUDGET = 16 * 2**20  # floats of logits per scoring batch (memory: a 49k vocabulary is 200 KB per token)
_REFERENCE: dict[tuple, np.ndarray] = {}


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Total negative log-likelihood (nats) of `labels` under `logits` (tokens, vocab), computed stably."""
    x = logits.astype(np.float64)
    top = x.max(-1, keepdims=True)
    logz = np.log(np.exp(x - top).sum(-1)) + top[:, 0]
    return float((logz - x[np.arange(len(labels)), labels]).sum())


def scoring_batch(task: Any, vocab: int) -> int:
    """Windows per scoring call such that the logits stay within LOGIT_BUDGET floats."""
    return max(1, LOGIT_BUDGET // (task.params.context * vocab))


def quality(task: Any, sess: Any, reference: np.ndarray | None) -> tuple[dict[str, float], np.ndarray]:
    """perplexity, bits_per_byte and teacher_agreement over the test windows; and this model's top-1 tokens."""
    test = task.splits["test"]
    total, top1, i, batch = 0.0, [], 0, 1  # one window first: it tells the vocabulary, which sizes the rest
    while i < len(test.ids):
        rows = test.ids[i:i + batch]
        logits = task.onnx_logits(sess, {"input_ids": np.ascontiguousarray(rows[:, :-1])})
        total += nll(logits, rows[:, 1:].reshape(-1))
        top1.append(logits.argmax(-1))
        i, batch = i + len(rows), scoring_batch(task, logits.shape[-1])
    pred = np.concatenate(top1)
    metrics = {"perplexity": float(np.exp(total / test.tokens)),
               "bits_per_byte": total / np.log(2) / max(test.text_bytes, 1),
               "teacher_agreement": 1.0 if reference is None else float((pred == reference).mean())}
    if reference is None:  # the baseline: what a general-purpose compressor does on the same text, for scale
        metrics["gzip_bits_per_byte"] = gzip_bits_per_byte(task)
    return metrics, pred


def gzip_bits_per_byte(task: Any) -> float:
    """gzip -9's bits per byte on the test split's text: a language model of text should do better."""
    import gzip

    from orchestrator.tasks.lm.data import JOIN

    text = JOIN.join(task.documents["test"]).encode("utf-8")
    return 8 * len(gzip.compress(text, 9)) / max(len(text), 1)


def reference_tokens(task: Any, path: Path, threads: int) -> np.ndarray:
    """The baseline ONNX model's top-1 next tokens on the test windows, once per process and file version."""
    from orchestrator.measure.probe import session

    key = (str(path), path.stat().st_mtime_ns, id(task))
    if key not in _REFERENCE:
        _REFERENCE[key] = quality(task, session(path, threads), None)[1]
    return _REFERENCE[key]


def _presents(sess: Any, outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The present key/values of a run, renamed to the past inputs they feed next."""
    names = [o.name for o in sess.get_outputs()]
    return {n.replace("present.", "past_key_values."): v for n, v in zip(names, outputs, strict=True)
            if n.startswith("present.")}


def generate(task: Any, sess: Any, prompt: np.ndarray, steps: int) -> tuple[float, list[float], dict]:
    """Greedy decoding at batch 1: (prefill ms, per-step ms, the prompt's present key/values)."""
    from orchestrator.tasks.lm.feeds import complete_feeds

    start = time.perf_counter()
    out = sess.run(None, complete_feeds(sess, prompt))
    prefill = (time.perf_counter() - start) * 1e3
    first_past = past = _presents(sess, out)
    token = out[0][:, -1].argmax(-1).reshape(1, 1)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        out = sess.run(None, complete_feeds(sess, token, past))
        times.append((time.perf_counter() - start) * 1e3)
        past, token = _presents(sess, out), out[0][:, -1].argmax(-1).reshape(1, 1)
    return prefill, times, first_past


def greedy_ids(sess: Any, prompt: list[int], steps: int) -> list[int]:
    """`steps` ids of argmax decoding after `prompt` through the graph's KV cache (batch 1): the text the other
    runtimes' float models must reproduce."""
    from orchestrator.tasks.lm.feeds import complete_feeds

    out = sess.run(None, complete_feeds(sess, np.asarray([prompt])))
    ids: list[int] = []
    for _ in range(steps):
        ids.append(int(out[0][0, -1].argmax()))
        out = sess.run(None, complete_feeds(sess, np.asarray([ids[-1:]]), _presents(sess, out)))
    return ids


def speed(task: Any, sess: Any) -> dict[str, float]:
    """prefill_ms, decode latency / tokens per second and the KV cache's size per 1k tokens (see module doc)."""
    stream = task.splits["test"].ids.reshape(-1)
    prompt = stream[:PROMPT_TOKENS].reshape(1, -1)
    generate(task, sess, prompt, WARMUP_STEPS)
    prefills = [generate(task, sess, prompt, 0)[0] for _ in range(PREFILL_REPEATS)]
    _, steps, past = generate(task, sess, prompt, DECODE_STEPS)
    kv_bytes = sum(v.nbytes for v in past.values())
    p50 = float(np.percentile(steps, 50))
    return {"prefill_ms": float(np.median(prefills)), "decode_latency_p50_ms": p50, "latency_p50_ms": p50,
            "decode_latency_p90_ms": float(np.percentile(steps, 90)),
            "decode_tokens_per_s": len(steps) / (sum(steps) / 1e3),
            "kv_cache_mb_per_1k_tokens": kv_bytes / prompt.shape[1] * 1000 / 1e6}


def measure(task: Any, path: Path, settings: Any, reference: Path | None) -> dict[str, float]:
    """Every metric of one LM ONNX file (see the module doc); `reference` = the baseline's file (None: this is it)."""
    from orchestrator.artifacts.onnx_utils import gzip_size_bytes, onnx_param_count, size_bytes, sparsity
    from orchestrator.measure.probe import probe, session
    from orchestrator.tasks.lm.feeds import complete_feeds

    sess = session(path, settings.threads)
    metrics = {"model_size_mb": size_bytes(path) / 1e6, "model_size_gzip_mb": gzip_size_bytes(path, 6) / 1e6,
               "params": float(onnx_param_count(path)), "sparsity": sparsity(path)}
    ref = None if reference is None else reference_tokens(task, reference, settings.threads)
    metrics.update(quality(task, sess, ref)[0])
    faults.point("measure:mid")
    metrics.update(speed(task, sess))
    stream = task.splits["test"].ids
    one = complete_feeds(sess, stream.reshape(-1)[:PROMPT_TOKENS].reshape(1, -1))
    big = complete_feeds(sess, np.ascontiguousarray(stream[:min(4, len(stream)), :-1]))
    del sess
    metrics.update(probe(path, one, big, settings.threads))
    return metrics
