"""The child processes of `orchestrator.artifacts.genai`: the GenAI model builder, and one measurement.

Run as `python -m orchestrator.artifacts.genai_child build BUILDER-ARGS...` or
`python -m orchestrator.artifacts.genai_child measure REQUEST.json ANSWER.json`; never imported by the parent,
so that onnxruntime-genai's native library, the builder's torch work and a measurement's memory all stay here.

`build` runs onnxruntime-genai's model builder under the transformers this project pins (4.57.x), although the
0.18 builder is written against transformers 5: a compatibility layer (`compat_transformers`), applied in this
process only, gives it the two names and the config shape it expects; the weights it reads are the same.
"""

from __future__ import annotations

import json
import runpy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.artifacts.memory import peak_rss_mb  # VmHWM: ru_maxrss survives the spawn

# Classes the 0.18 builder imports at module level that transformers 4.57 lacks; it uses them only for
# Qwen3.5 checkpoints, which transformers 4.57 cannot load anyway.
_V5_ONLY = ("Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration")


def _absent(name: str) -> type:
    """A stand-in for a transformers-5 class: importable, but loading with it says what is missing."""

    def from_pretrained(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{name} needs transformers 5; this environment has transformers 4")

    return type(name, (), {"from_pretrained": staticmethod(from_pretrained)})


def _v5_rope(config: Any) -> None:
    """Give a transformers-4 config the `rope_parameters` dict transformers 5 has (theta and scaling in one).

    The builder iterates `rope_scaling` unconditionally (None in 4.x when there is no scaling) and reads
    `rope_parameters["rope_type"]`; in 5.x both hold the merged dict, which is what is built here.
    """
    if config is None or not hasattr(config, "rope_theta") or isinstance(getattr(config, "rope_parameters", None),
                                                                         dict):
        return
    params = {"rope_type": "default", "rope_theta": config.rope_theta, **(config.rope_scaling or {})}
    config.rope_parameters, config.rope_scaling = params, dict(params)


def compat_transformers() -> None:
    """Let the 0.18 builder import and read configs under transformers 4.57 (nothing changes under 5.x)."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return
    for name in _V5_ONLY:
        if not hasattr(transformers, name):
            setattr(transformers, name, _absent(name))
    load = transformers.AutoConfig.from_pretrained.__func__

    def from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
        config = load(cls, *args, **kwargs)
        _v5_rope(config)
        _v5_rope(getattr(config, "text_config", None))
        return config

    transformers.AutoConfig.from_pretrained = classmethod(from_pretrained)


def run_builder(args: list[str]) -> None:
    """The builder's command line, as `python -m onnxruntime_genai.models.builder ARGS` would run it."""
    compat_transformers()
    sys.argv = ["onnxruntime_genai.models.builder", *args]
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)


def log_softmax_nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Total negative log-likelihood (nats) of `labels` under `logits` (tokens, vocab), in float64."""
    x = logits.astype(np.float64)
    top = x.max(-1, keepdims=True)
    logz = np.log(np.exp(x - top).sum(-1)) + top[:, 0]
    return float((logz - x[np.arange(len(labels)), labels]).sum())


def _generator(og: Any, model: Any, max_length: int, min_length: int = 0) -> Any:
    """A greedy generator; min_length holds back EOS so that a timed run makes every step it asks for."""
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max_length, min_length=min_length, do_sample=False, num_beams=1)
    return og.Generator(model, params)


def _score(og: Any, model: Any, windows: np.ndarray) -> tuple[float, int, np.ndarray]:
    """(total NLL, tokens scored, argmax per scored position) over the windows, each from an empty cache.

    `append_tokens` runs the decoder on the whole window at once and `get_output("logits")` returns the
    graph's logits for every appended position (the builder keeps the full LM head unless prune_lm_head is
    set), so scoring goes through og itself rather than a separate onnxruntime session.
    """
    total, count, top1 = 0.0, 0, []
    for row in windows:
        gen = _generator(og, model, len(row))
        gen.append_tokens(np.ascontiguousarray(row[:-1], dtype=np.int32))
        logits = np.asarray(gen.get_output("logits"))
        logits = logits.reshape(-1, logits.shape[-1])
        total += log_softmax_nll(logits, row[1:].astype(np.int64))
        count += len(row) - 1
        top1.append(logits.argmax(-1))
        del gen
    return total, count, np.concatenate(top1) if top1 else np.zeros(0, dtype=np.int64)


def _kv_bytes_per_token(gen: Any, layers: int) -> float:
    """Bytes of K and V cache per token position, summed over layers, measured on the present tensors.

    The presents are the cache buffers themselves (og shares past and present, preallocated to max_length
    positions), so their bytes over their sequence length is the cache's element size per token as stored;
    a run reserves this times max_length.
    """
    total = 0.0
    for i in range(layers):
        for kind in ("key", "value"):
            t = np.asarray(gen.get_output(f"present.{i}.{kind}"))
            total += t.nbytes / t.shape[2]
    return total


def _timed_decode(og: Any, model: Any, prompt: np.ndarray, steps: int) -> list[float]:
    """ms per greedy step after the prompt: each `generate_next_token` after the first runs one forward.

    The first call after `append_tokens` only picks a token from the prompt's logits (no forward), so it is
    made untimed and `steps` forwards are timed after it.
    """
    gen = _generator(og, model, len(prompt) + steps + 1, len(prompt) + steps + 1)
    gen.append_tokens(prompt)
    gen.generate_next_token()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        gen.generate_next_token()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """The answer to one request (see `orchestrator.artifacts.genai.measure_child` for the keys)."""
    import onnxruntime_genai as og

    folder = Path(request["model"])
    threads = int(request.get("threads", 1))
    start = time.perf_counter()
    config = og.Config(str(folder))
    # one intra-op pool of `threads`, no inter-op parallelism: batch-1 decoding, comparable across runtimes
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    load_ms = (time.perf_counter() - start) * 1e3
    meta = json.loads((folder / "genai_config.json").read_text())["model"]
    answer: dict[str, Any] = {"load_ms": load_ms, "n_vocab": int(meta["vocab_size"])}

    windows = np.load(request["windows"])
    total, count, top1 = _score(og, model, windows)
    out = Path(request["out_dir"])
    np.save(out / "top1.npy", top1)
    answer.update(nll=total, tokens=count, top1=str(out / "top1.npy"))

    prompt = np.asarray(request["prompt"], dtype=np.int32)
    decode_steps, warmup = int(request.get("decode_steps", 32)), int(request.get("warmup_steps", 4))
    _timed_decode(og, model, prompt, warmup)
    prefills = []
    for _ in range(int(request.get("prefill_repeats", 5))):
        gen = _generator(og, model, len(prompt) + 1)
        start = time.perf_counter()
        gen.append_tokens(prompt)
        prefills.append((time.perf_counter() - start) * 1e3)
    answer["kv_bytes_per_token"] = _kv_bytes_per_token(gen, int(meta["decoder"]["num_hidden_layers"]))
    del gen
    answer.update(prefill_ms=prefills, decode_ms=_timed_decode(og, model, prompt, decode_steps))

    answer["text_ids"] = None
    if request.get("text") is not None:
        answer["text_ids"] = [int(t) for t in og.Tokenizer(model).encode(request["text"])]
    answer["greedy_ids"] = None
    if request.get("greedy"):
        ids = np.asarray(request["greedy"]["prompt"], dtype=np.int32)
        n = int(request["greedy"].get("tokens", 32))
        gen = _generator(og, model, len(ids) + n, len(ids) + n)
        gen.append_tokens(ids)
        while not gen.is_done():
            gen.generate_next_token()
        answer["greedy_ids"] = [int(t) for t in gen.get_sequence(0)[len(ids):]]
    answer["peak_rss_mb"] = peak_rss_mb()
    return answer


def main(argv: list[str]) -> None:
    """`build ARGS...` or `measure REQUEST.json ANSWER.json`."""
    if argv[:1] == ["build"]:
        run_builder(argv[1:])
    elif argv[:1] == ["measure"] and len(argv) == 3:
        answer = measure(json.loads(Path(argv[1]).read_text()))
        Path(argv[2]).write_text(json.dumps(answer))
    else:
        raise SystemExit("usage: genai_child build BUILDER-ARGS... | measure REQUEST.json ANSWER.json")


if __name__ == "__main__":
    main(sys.argv[1:])
