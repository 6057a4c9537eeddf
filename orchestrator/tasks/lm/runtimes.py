"""Measuring a causal LM where people run it: a GGUF in llama.cpp, a GenAI folder in ONNX Runtime GenAI, by the
protocol its ONNX is measured by in ONNX Runtime (orchestrator.tasks.lm.measure).

The same test windows and the same token ids (fed to the runtime as they are, never re-tokenized), so
`perplexity`, `bits_per_byte` and `teacher_agreement` (against the baseline ONNX's top-1 tokens) compare across
runtimes. Speed at batch 1 and `eval.threads`: `prefill_ms` (the median of 5 prompts of 128 test tokens from an
empty cache), `decode_latency_p50_ms` / `_p90_ms` and `decode_tokens_per_s` over 32 greedy steps after a
warm-up, `kv_cache_mb_per_1k_tokens` (the runtime's own cache per token), `load_ms` and `peak_rss_mb` of the
child process that did all this (each runtime runs in a fresh child), and `model_size_mb` of the model files.

Tokenizers: a GGUF or a GenAI folder carries its own tokenizer, which is what its runtime tokenizes a user's
text with. `runtime_token_agreement` is the share of the test text's token ids that tokenizer gives as ours
did (1.0: a deployed model sees the tokens it was measured on).
"""

from __future__ import annotations

import difflib
import importlib
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.tasks.lm.data import JOIN
from orchestrator.tasks.lm.measure import DECODE_STEPS, PREFILL_REPEATS, PROMPT_TOKENS, WARMUP_STEPS, reference_tokens

TIMEOUT_S = 3600.0  # the child is killed (and the node's measurement fails) past this: nothing hangs silently
AGREEMENT_IDS = 4096  # ids compared for runtime_token_agreement (difflib is quadratic in the worst case)
RUNTIMES = {"gguf": "orchestrator.artifacts.llamacpp", "genai": "orchestrator.artifacts.genai"}


def model_files(fmt: str, path: Path) -> tuple[Path, list[Path]]:
    """What the runtime loads for the node's model file `path` (a GGUF; a GenAI folder's genai_config.json)
    and the files that are the model's size (the GGUF; the folder's ONNX graph and weights)."""
    if fmt == "gguf":
        return path, [path]
    return path.parent, sorted(p for p in path.parent.iterdir() if p.name.startswith("model.onnx"))


def measure(task: Any, fmt: str, path: Path, settings: Any, reference: Path | None) -> dict[str, float]:
    """Every metric of one `fmt` artifact (see the module doc); `reference` = the baseline's ONNX."""
    runtime = importlib.import_module(RUNTIMES[fmt])
    model, files = model_files(fmt, path)
    test, text = task.splits["test"], JOIN.join(task.documents["test"])
    with tempfile.TemporaryDirectory() as tmp:
        windows = Path(tmp) / "windows.npy"
        np.save(windows, np.ascontiguousarray(test.ids, dtype=np.int32))
        answer = runtime.measure_child({
            "model": str(model), "threads": int(settings.threads), "windows": str(windows),
            "prompt": [int(t) for t in test.ids.reshape(-1)[:PROMPT_TOKENS]], "decode_steps": DECODE_STEPS,
            "warmup_steps": WARMUP_STEPS, "prefill_repeats": PREFILL_REPEATS, "text": text, "out_dir": tmp},
            TIMEOUT_S)
        top1 = np.load(answer["top1"])
    if int(answer["tokens"]) != test.tokens:
        raise RuntimeError(f"{fmt}: the runtime scored {answer['tokens']} tokens, the test windows hold {test.tokens}")
    total = float(answer["nll"])
    steps = [float(t) for t in answer["decode_ms"]]
    p50 = float(np.percentile(steps, 50))
    metrics = {
        "perplexity": math.exp(total / test.tokens), "bits_per_byte": total / math.log(2) / max(test.text_bytes, 1),
        "teacher_agreement": 1.0 if reference is None else float(
            (top1 == reference_tokens(task, reference, settings.threads)).mean()),
        "prefill_ms": float(np.median(answer["prefill_ms"])), "decode_latency_p50_ms": p50, "latency_p50_ms": p50,
        "decode_latency_p90_ms": float(np.percentile(steps, 90)),
        "decode_tokens_per_s": len(steps) / (sum(steps) / 1e3),
        "kv_cache_mb_per_1k_tokens": float(answer["kv_bytes_per_token"]) * 1000 / 1e6,
        "load_ms": float(answer["load_ms"]), "peak_rss_mb": float(answer["peak_rss_mb"]),
        "model_size_mb": sum(f.stat().st_size for f in files) / 1e6}
    if answer.get("text_ids") is not None:
        metrics["runtime_token_agreement"] = token_agreement(
            task.tokenizer(text, add_special_tokens=False)["input_ids"], answer["text_ids"])
    return metrics


def greedy(fmt: str, model: Path, prompt: list[int], tokens: int, threads: int = 1,
           timeout_s: float = 600.0) -> list[int]:
    """`tokens` ids of argmax decoding after `prompt` in the runtime of `fmt` (a GGUF file, a GenAI folder), in
    one child that scores a two-token window only: the text the float models of every runtime must agree on."""
    runtime = importlib.import_module(RUNTIMES[fmt])
    with tempfile.TemporaryDirectory(prefix="greedy-") as work:
        windows = Path(work) / "windows.npy"
        np.save(windows, np.asarray([prompt[:2]], dtype=np.int32))
        out = runtime.measure_child({"model": str(model), "threads": threads, "windows": str(windows),
                                     "prompt": prompt, "decode_steps": 1, "warmup_steps": 0, "prefill_repeats": 1,
                                     "greedy": {"prompt": prompt, "tokens": tokens}, "out_dir": work}, timeout_s)
    return [int(t) for t in out["greedy_ids"]]


def token_agreement(ours: list[int], theirs: list[int]) -> float:
    """The share of the first AGREEMENT_IDS ids two tokenizations have in common, in order (1.0: identical)."""
    a, b = list(ours[:AGREEMENT_IDS]), list(theirs[:AGREEMENT_IDS])
    if a == b:
        return 1.0
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return 2 * sum(m.size for m in matcher.get_matching_blocks()) / max(len(a) + len(b), 1)


def unsupported(fmt: str, source: str) -> str | None:
    """Why the model at `source` cannot become a `fmt` artifact (None: it can), read from its config, not loaded.

    Both writers take Llama-family models (the GGUF writer's list; the GenAI builder's is wider, but our
    checks of it cover Llamas only); a GGUF source is judged by its `general.architecture`."""
    from orchestrator.artifacts.gguf_write import unsupported as why

    path = Path(source) if source else None
    if path is None:
        return None
    if path.suffix.lower() == ".gguf":
        from orchestrator.tasks.checks.gguf import read_header

        return why({"model_type": read_header(path).metadata.get("general.architecture", "unknown")})
    config = path / "config.json"
    return why(json.loads(config.read_text())) if config.is_file() else None
