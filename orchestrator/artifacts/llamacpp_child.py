"""The child process of the llama.cpp runtime: loads libllama, then quantizes a GGUF or measures one.

Run as `python -m orchestrator.artifacts.llamacpp_child REQUEST.json ANSWER.json`; `llamacpp` starts it (one fresh
process per job, so a crash in the C library stays here and the peak RSS is this model's own). The request's
`op` is `quantize`, `measure`, `tokenize` or `speculative`; see the functions of `llamacpp` for the keys.
Measuring mirrors the ONNX LM measurement (orchestrator/tasks/lm/measure.py): the same scoring of windows, the
same warm-up / prefill / decode order, the same timed spans (the runtime call only, not the argmax).
"""

from __future__ import annotations

import ctypes
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.artifacts import imatrix, speculation
from orchestrator.artifacts import llamacpp_abi as abi
from orchestrator.artifacts.memory import peak_rss_mb

LOGIT_ROWS = 64  # positions per float64 log-softmax chunk: 64 x a 49k vocabulary is 25 MB


_KEEP = [False]  # whether the last log line was kept: a CONT line continues it


@abi.LogCallback
def _log(level: int, text: bytes | None, _: Any) -> None:
    """Pass warnings and errors to stderr (the parent shows its tail on failure); drop llama.cpp's info chatter."""
    _KEEP[0] = level >= abi.LOG_WARN if level != abi.LOG_CONT else _KEEP[0]
    if _KEEP[0] and text:
        sys.stderr.write(text.decode("utf-8", "replace"))


def open_lib(path: str) -> ctypes.CDLL:
    """libllama with the best CPU backend for this machine loaded from the folder it lies in."""
    lib = abi.load(Path(path))
    lib.llama_log_set(_log, None)
    # The package builds ggml's CPU backend once per instruction set (libggml-cpu-haswell.so, ...-zen4.so);
    # ggml picks the best one this CPU runs. Without this there is no device and loading a model fails.
    lib.ggml_backend_load_all_from_path(str(Path(path).parent).encode())
    if lib.ggml_backend_dev_count() == 0:
        raise RuntimeError(f"no ggml backend could be loaded from {Path(path).parent}")
    lib.llama_backend_init()
    return lib


def quantize(lib: ctypes.CDLL, req: dict[str, Any]) -> dict[str, Any]:
    """llama_model_quantize(src, dst) to `ftype` with `threads` threads; requantizing allowed (see llamacpp).
    With `imatrix` (an .npz of `imatrix.save`), the tensors it covers are then quantized again with it."""
    params = lib.llama_model_quantize_default_params()
    params.ftype, params.nthread, params.allow_requantize = req["ftype"], req["threads"], True
    start = time.perf_counter()
    rc = lib.llama_model_quantize(req["src"].encode(), req["dst"].encode(), ctypes.byref(params))
    answer: dict[str, Any] = {"rc": int(rc), "seconds": time.perf_counter() - start}
    if rc == 0 and req.get("imatrix"):
        answer.update(imatrix.apply(lib, Path(req["src"]), Path(req["dst"]), Path(req["imatrix"])))
    return answer


class Runner:
    """One model and one context, sized for the request's windows and generation, with one reusable batch."""

    def __init__(self, lib: ctypes.CDLL, req: dict[str, Any], longest: int, n_ctx: int) -> None:
        self.lib = lib
        start = time.perf_counter()
        mp = lib.llama_model_default_params()
        mp.n_gpu_layers, mp.load_mode = 0, abi.LOAD_MODE_MMAP  # CPU, mapped, never mlock'ed
        self.model = lib.llama_model_load_from_file(req["model"].encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {req['model']}")
        cp = lib.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = n_ctx, longest, longest, 1
        cp.n_threads = cp.n_threads_batch = req["threads"]
        self.ctx = lib.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {n_ctx} tokens")
        self.load_ms = (time.perf_counter() - start) * 1e3
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.memory = lib.llama_get_memory(self.ctx)
        self.batch = lib.llama_batch_init(longest, 0, 1)
        self.capacity = longest

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)

    def clear(self) -> None:
        self.lib.llama_memory_clear(self.memory, True)

    def decode(self, ids: list[int] | np.ndarray, start: int, all_logits: bool) -> float:
        """Feed `ids` at positions start.. as sequence 0 in one llama_decode; the ms that call took (until its
        results are ready). Logits for every position, or only the last."""
        b, n = self.batch, len(ids)
        assert n <= self.capacity
        for i, t in enumerate(ids):
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = int(t), start + i, 1, 0
            b.logits[i] = 1 if all_logits or i == n - 1 else 0
        b.n_tokens = n
        t0 = time.perf_counter()
        rc = self.lib.llama_decode(self.ctx, b)
        self.lib.llama_synchronize(self.ctx)
        ms = (time.perf_counter() - t0) * 1e3
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} ({n} tokens at position {start})")
        return ms

    def logits(self, rows: int) -> np.ndarray:
        """The last decode's logits, (rows, n_vocab), as a view on llama.cpp's buffer (valid until next decode)."""
        return np.ctypeslib.as_array(self.lib.llama_get_logits(self.ctx), shape=(rows, self.n_vocab))

    def last_argmax(self) -> int:
        ptr = self.lib.llama_get_logits_ith(self.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def generate(self, prompt: list[int], steps: int) -> tuple[float, list[float], list[int]]:
        """Greedy from an empty cache: (prefill ms, ms per step, the steps + 1 ids chosen)."""
        self.clear()
        prefill = self.decode(prompt, 0, False)
        ids, times = [self.last_argmax()], []
        for k in range(steps):
            times.append(self.decode(ids[-1:], len(prompt) + k, False))
            ids.append(self.last_argmax())
        return prefill, times, ids

    def cut(self, length: int) -> None:
        """Forget every cached position from `length` on (a rejected draft's tokens)."""
        if not self.lib.llama_memory_seq_rm(self.memory, 0, length, -1):
            raise RuntimeError(f"llama.cpp could not cut its cache back to {length} positions")

    def argmax_rows(self, rows: int) -> list[int]:
        """The argmax of each of the last decode's `rows` positions (its logits for all of them)."""
        return [int(i) for i in self.logits(rows).argmax(-1)]

    def tokenize(self, text: str) -> list[int]:
        """The GGUF tokenizer's ids of `text`, no BOS/EOS added, special-token text left as plain text."""
        raw = text.encode()
        n = len(raw) + 8
        while True:
            buf = (ctypes.c_int32 * n)()
            got = self.lib.llama_tokenize(self.vocab, raw, len(raw), buf, n, False, False)
            if got >= 0:
                return list(buf[:got])
            n = -got


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Total NLL (nats) of `labels` under `logits`, float64 and stable: the ONNX LM measurement's formula."""
    x = logits.astype(np.float64)
    top = x.max(-1, keepdims=True)
    logz = np.log(np.exp(x - top).sum(-1)) + top[:, 0]
    return float((logz - x[np.arange(len(labels)), labels]).sum())


def measure(lib: ctypes.CDLL, req: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Quality on the windows, speed on the prompt, the KV cache's bytes per token (see llamacpp.measure_child)."""
    windows = np.load(req["windows"])
    prompt = [int(t) for t in req["prompt"]]
    greedy = req.get("greedy")
    gen = max(req["warmup_steps"], req["decode_steps"]) + 1
    longest = max(windows.shape[1] - 1, len(prompt), len(greedy["prompt"]) if greedy else 0)
    n_ctx = max(windows.shape[1] - 1, len(prompt) + gen,
                len(greedy["prompt"]) + greedy["tokens"] if greedy else 0)
    run = Runner(lib, req, longest, n_ctx)
    try:
        if int(windows.max(initial=0)) >= run.n_vocab or int(windows.min(initial=0)) < 0:
            raise ValueError(f"window ids outside the GGUF's vocabulary of {run.n_vocab}")
        total, top1 = 0.0, []
        for row in windows:
            run.clear()  # each window from position 0 with nothing cached, like one ONNX forward pass
            run.decode(row[:-1], 0, True)
            n = len(row) - 1
            for i in range(0, n, LOGIT_ROWS):
                chunk = run.logits(n)[i:i + LOGIT_ROWS]
                total += nll(chunk, row[1 + i:1 + i + len(chunk)])
                top1.append(chunk.argmax(-1))
        top1_path = out_dir / "top1.npy"
        np.save(top1_path, np.concatenate(top1).astype(np.int32) if top1 else np.zeros(0, np.int32))

        run.generate(prompt, req["warmup_steps"])
        prefills = [run.generate(prompt, 0)[0] for _ in range(req["prefill_repeats"])]
        # The KV cache's size per token: the serialized state of sequence 0 holding the prompt minus that of an
        # empty one, per prompt token. It counts the K and V rows of every layer in the cache's own type (F16
        # here) plus each cell's position and sequence id (a few bytes); not the unused cells of the allocation.
        run.clear()
        empty = lib.llama_state_seq_get_size(run.ctx, 0)
        _, steps, _ = run.generate(prompt, req["decode_steps"])
        run.clear()
        run.decode(prompt, 0, False)
        kv_bytes = (lib.llama_state_seq_get_size(run.ctx, 0) - empty) / len(prompt)

        answer: dict[str, Any] = {
            "nll": total, "tokens": int(windows.shape[0] * (windows.shape[1] - 1)), "top1": str(top1_path),
            "prefill_ms": prefills, "decode_ms": steps, "load_ms": run.load_ms, "kv_bytes_per_token": kv_bytes,
            "n_vocab": run.n_vocab, "n_ctx": int(lib.llama_n_ctx(run.ctx)),
            "bos_id": int(lib.llama_vocab_bos(run.vocab)), "add_bos": bool(lib.llama_vocab_get_add_bos(run.vocab)),
            "system_info": lib.llama_print_system_info().decode()}
        if req.get("text") is not None:
            answer["text_ids"] = run.tokenize(req["text"])
        if greedy:
            n = int(greedy["tokens"])
            answer["greedy_ids"] = run.generate([int(t) for t in greedy["prompt"]], max(n - 1, 0))[2][:n]
    finally:
        run.close()
    answer["peak_rss_mb"] = peak_rss_mb()  # VmHWM: ru_maxrss would carry the forking sweep's size over exec
    return answer


class ContextDecoder:
    """A llama.cpp context (a Runner) with its cached positions counted, as speculation's Decoder."""

    def __init__(self, run: Runner) -> None:
        self.run, self.length = run, 0

    def start(self, prompt: list[int]) -> int:
        self.run.clear()
        self.length = 0
        return self.feed(prompt)[-1]

    def feed(self, tokens: list[int], every: bool = False) -> list[int]:
        self.run.decode(tokens, self.length, every)
        self.length += len(tokens)
        return self.run.argmax_rows(len(tokens)) if every else [self.run.last_argmax()]

    def cut(self, length: int) -> None:
        self.run.cut(length)
        self.length = length


def speculative(lib: ctypes.CDLL, req: dict[str, Any]) -> dict[str, Any]:
    """`draft` drafting `k` ids per round for `target` (GGUF paths) on each of `prompts`, `tokens` new ids each,
    against the target alone on the same prompts: orchestrator.artifacts.speculation's loop and metrics, with
    llama.cpp's caches cut back in place (greedy, batch 1, `threads`)."""
    prompts, n, k = [[int(t) for t in p] for p in req["prompts"]], int(req["tokens"]), int(req["k"])
    longest = max(max(len(p) for p in prompts), k + 1)
    n_ctx = max(len(p) for p in prompts) + n + k + 2
    target = Runner(lib, {**req, "model": req["target"]}, longest, n_ctx)
    draft = Runner(lib, {**req, "model": req["draft"]}, longest, n_ctx)
    try:
        if draft.n_vocab != target.n_vocab:
            raise ValueError(f"the draft's vocabulary has {draft.n_vocab} tokens, the target's {target.n_vocab}")
        return speculation.measure(ContextDecoder(draft), ContextDecoder(target), prompts, n, k)
    finally:
        draft.close()
        target.close()


def tokenize(lib: ctypes.CDLL, req: dict[str, Any]) -> dict[str, Any]:
    """The GGUF's own tokenization of `text` (nothing added) and what its vocabulary says about BOS."""
    run = Runner(lib, {**req, "threads": 1}, 8, 8)
    try:
        return {"ids": run.tokenize(req["text"]), "bos_id": int(lib.llama_vocab_bos(run.vocab)),
                "add_bos": bool(lib.llama_vocab_get_add_bos(run.vocab)), "n_vocab": run.n_vocab}
    finally:
        run.close()


def main(argv: list[str]) -> int:
    """Read the request, run it, write the answer; a Python error becomes a non-zero exit with its message."""
    req_path, answer_path = Path(argv[0]), Path(argv[1])
    req = json.loads(req_path.read_text())
    lib = open_lib(req["lib"])
    ops = {"quantize": quantize, "tokenize": tokenize, "speculative": speculative}
    answer = ops[req["op"]](lib, req) if req["op"] in ops else measure(lib, req, answer_path.parent)
    answer_path.write_text(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
