"""llama.cpp as a runtime for GGUF causal LMs: where its library is, quantizing with its own quantizer, and
measuring a GGUF the way the ONNX LM measurement does (orchestrator/tasks/lm/measure.py).

The library is the prebuilt `libllama` (and ggml's per-instruction-set CPU backends) of the npm package
`@node-llama-cpp/linux-x64`, pinned in orchestrator/measure/targets/browser/package.json and installed with
`npm ci --prefix orchestrator/measure/targets/browser`: nothing is downloaded or built at run time.
The ctypes declarations live in `llamacpp_abi`. Every call into the C library (quantizing, measuring) runs in a
fresh child process (`llamacpp_child`), so a crash or an abort in llama.cpp cannot take the caller down and the
child's peak RSS is the model's own; `versions` alone loads the library here, to read its version strings.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.artifacts.llamacpp_abi import FTYPES

PACKAGE = "@node-llama-cpp/linux-x64"
INSTALL = "npm ci --prefix orchestrator/measure/targets/browser"
ENV_LIB = "ORCHESTRATOR_LLAMA_LIB"
# Found by path rather than by importing orchestrator.measure.targets.browser: artifacts sits below measure in
# the package's layers, and the folder is all that is needed.
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "measure" / "targets" / "browser" / "node_modules" / PACKAGE
QUANT_TYPES: dict[str, int] = dict(FTYPES)  # name -> enum llama_ftype of the pinned llama.h
STDERR_TAIL = 4000  # characters of a failed child's stderr quoted in the error


class RuntimeMissing(RuntimeError):
    """llama.cpp's library is not installed (or ORCHESTRATOR_LLAMA_LIB names a missing file)."""


def lib_path() -> Path:
    """libllama's path: $ORCHESTRATOR_LLAMA_LIB if set, else the one in the pinned npm package's bins folder."""
    given = os.environ.get(ENV_LIB)
    if given:
        if not Path(given).is_file():
            raise RuntimeMissing(f"{ENV_LIB}={given} is not a file; unset it to use the pinned llama.cpp "
                                 f"({PACKAGE}, installed with: {INSTALL})")
        return Path(given)
    found = sorted((PACKAGE_DIR / "bins").glob("linux-x64/libllama.v*.so")) or \
        sorted((PACKAGE_DIR / "bins").glob("linux-x64/libllama.so"))
    if not found:
        raise RuntimeMissing(f"llama.cpp's library is not installed ({PACKAGE} under {PACKAGE_DIR.parent.parent}); "
                             f"install it with: {INSTALL} (Linux x64, glibc)")
    return found[-1]


@functools.cache
def _versions(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    package = Path(path).parents[2]  # bins/linux-x64/libllama... -> the npm package's folder
    if (package / "package.json").is_file():
        out["node_llama_cpp"] = json.loads((package / "package.json").read_text())["version"]
    meta = Path(path).parent / "_nlcBuildMetadata.json"
    if meta.is_file():
        out["llama_cpp_release"] = json.loads(meta.read_text())["buildOptions"]["llamaCpp"]["release"]
    lib = ctypes.CDLL(path)  # only version strings: no backend, model or thread is created here
    for name, key in (("llama_version", "llama_cpp_version"), ("ggml_commit", "llama_cpp_commit"),
                      ("ggml_version", "ggml_version")):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = ctypes.c_char_p, []
        out[key] = fn().decode()
    return out


def versions() -> dict[str, str]:
    """What the library is, for cache keys and run tags: `node_llama_cpp` (the npm package's version),
    `llama_cpp_release` (the llama.cpp release it was built from, per the package's build metadata),
    `llama_cpp_version`, `llama_cpp_commit` and `ggml_version` (as the library itself reports them)."""
    return _versions(str(lib_path()))


def _run_child(request: dict[str, Any], work: Path, timeout_s: float) -> dict[str, Any]:
    """Run one request in a fresh `llamacpp_child` process; its answer, or RuntimeError with its stderr's tail."""
    req_path, answer_path = work / "request.json", work / "answer.json"
    req_path.write_text(json.dumps({**request, "lib": str(lib_path())}))
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the orchestrator package
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "orchestrator.artifacts.llamacpp_child", str(req_path), str(answer_path)]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, errors="replace", timeout=timeout_s)
    except subprocess.TimeoutExpired as err:  # run() has killed the child
        tail = (err.stderr or b"")[-STDERR_TAIL:]
        tail = tail.decode("utf-8", "replace") if isinstance(tail, bytes) else tail
        raise RuntimeError(f"the llama.cpp child ran past {timeout_s:g} s and was killed; stderr ends:\n{tail}") \
            from None
    if done.returncode != 0 or not answer_path.is_file():
        raise RuntimeError(f"the llama.cpp child failed (exit code {done.returncode}); stderr ends:\n"
                           f"{done.stderr[-STDERR_TAIL:]}")
    return json.loads(answer_path.read_text())


def quantize(src: Path, dst: Path, type: str, threads: int = 1, timeout_s: float = 3600.0,
             imatrix: Path | None = None) -> dict[str, float]:
    """Write `src` (a GGUF) quantized to `type` (a key of QUANT_TYPES) to `dst` with llama.cpp's
    llama_model_quantize and its default per-tensor choices for that type (e.g. Q4_K_M keeps some tensors at
    Q6_K; tensors whose rows do not fit a k-quant block fall back to a legacy type).

    Requantizing is allowed, so an already quantized GGUF (e.g. Q4_1) can be turned into another type; the result
    then carries both rounding errors, so quantize from F32/F16/BF16 when the source is available.
    `imatrix`: an importance matrix (.npz of orchestrator.artifacts.imatrix.save) that the tensors it covers are
    quantized with, as llama.cpp's `llama-quantize --imatrix` would. Returns the child's metrics (seconds, and
    imatrix_tensors / imatrix_skipped with a matrix).
    Raises ValueError for an unknown type, RuntimeError when llama.cpp fails (with its return code)."""
    if type not in QUANT_TYPES:
        raise ValueError(f"unknown llama.cpp quantization type {type!r}; allowed: {', '.join(QUANT_TYPES)}")
    if not Path(src).is_file():
        raise FileNotFoundError(src)
    with tempfile.TemporaryDirectory(prefix="llamacpp-q-") as work:
        out = _run_child({"op": "quantize", "src": str(src), "dst": str(dst), "ftype": QUANT_TYPES[type],
                          "threads": int(threads), "imatrix": str(imatrix) if imatrix else None},
                         Path(work), timeout_s)
    if out["rc"] != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {dst}, {type}) returned {out['rc']}")
    return {k: float(v) for k, v in out.items() if k != "rc"}


def measure_child(request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Measure a GGUF causal LM in a fresh child process.

    `request`: `model` (GGUF path), `threads` (n_threads and n_threads_batch), `windows` (.npy of token ids,
    [n_windows, context + 1]), `prompt` (ids), `decode_steps`, `warmup_steps`, `prefill_repeats`; optional
    `text` (tokenized with the GGUF's tokenizer, nothing added), `greedy` ({"prompt": ids, "tokens": n}),
    `out_dir` (where top1.npy goes; default a new temporary folder that the caller owns).
    Answer: `nll` (total next-token NLL in nats over the windows, each scored from position 0 on an empty cache),
    `tokens`, `top1` (.npy path: the argmax per scored position, windows in order), `prefill_ms` (the prompt in one
    batch from an empty cache, per repeat), `decode_ms` (per greedy step after the prompt, after a warm-up),
    `load_ms` (model load + context creation), `kv_bytes_per_token`, `peak_rss_mb`, `n_vocab`, `n_ctx`, `bos_id`,
    `add_bos` (the GGUF vocabulary's), `system_info`, and `text_ids` / `greedy_ids` when asked.
    Raises RuntimeMissing without the library, RuntimeError when the child crashes or overruns `timeout_s`."""
    lib_path()  # RuntimeMissing here rather than as a child's error
    out_dir = Path(request.get("out_dir") or tempfile.mkdtemp(prefix="llamacpp-m-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    req = {**request, "op": "measure", "model": str(request["model"]), "windows": str(request["windows"]),
           "threads": int(request["threads"])}
    return _run_child(req, out_dir, timeout_s)


def speculative_child(draft: Path, target: Path, prompts: list[list[int]], tokens: int, k: int, threads: int,
                      timeout_s: float) -> dict[str, float]:
    """`draft` (a GGUF) drafting `k` tokens per round for `target` (a GGUF with the same vocabulary), greedy,
    batch 1, in a child: the `spec_*` metrics of orchestrator.tasks.lm.spec (acceptance rate, tokens/s with and
    without the draft, speed-up, tokens per target call, and whether every prompt's text equals the target's)."""
    lib_path()
    with tempfile.TemporaryDirectory(prefix="llamacpp-s-") as work:
        return _run_child({"op": "speculative", "draft": str(draft), "target": str(target), "prompts": prompts,
                           "tokens": int(tokens), "k": int(k), "threads": int(threads)}, Path(work), timeout_s)


def tokenize(model: Path, text: str, timeout_s: float = 600.0) -> dict[str, Any]:
    """The GGUF's own tokenizer on `text`, in a child: `ids` (nothing added), `bos_id`, `add_bos`, `n_vocab`."""
    lib_path()
    with tempfile.TemporaryDirectory(prefix="llamacpp-t-") as work:
        return _run_child({"op": "tokenize", "model": str(model), "text": text}, Path(work), timeout_s)
