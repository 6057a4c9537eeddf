"""Causal LMs as ONNX Runtime GenAI models: building them with its model builder, measuring them with og.

This module owns the boundary with `onnxruntime-genai` (the `genai` extra, pinned 0.18.0): whether it is
installed, the builder's command line (precision, int4 algorithm, block size) and the measurement request.
Both run in a fresh child process (`orchestrator.artifacts.genai_child`): the builder loads the whole torch
model and needs a transformers compatibility layer that must not leak into this process, and a measurement's
peak RSS must be its own and its crash must not take the caller with it. Nothing here imports onnxruntime_genai.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PACKAGE, MODULE, PINNED = "onnxruntime-genai", "onnxruntime_genai", "0.18.0"
INSTALL = 'pip install -e ".[genai]"  (onnxruntime-genai==0.18.0)'
PRECISIONS = ("fp32", "fp16", "int8", "int4")
# The builder's base methods for weight-only MatMulNBits quantization on CPU ('default' is RTN too, under
# other node names; its compound aliases such as k_quant_mixed are algorithm + extra_options below).
INT4_ALGORITHMS = ("rtn", "k_quant")
BLOCK_SIZES = (16, 32, 64, 128, 256)
CHILD = "orchestrator.artifacts.genai_child"
_TAIL = 4000  # characters of a failing child's stderr carried in the error


class RuntimeMissing(RuntimeError):
    """onnxruntime-genai is not importable here (or is not the version the builder layer was written for)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"ONNX Runtime GenAI is unavailable: {detail}; install it with {INSTALL}")


def check_installed() -> None:
    """Raise RuntimeMissing unless onnxruntime-genai 0.18.x can be imported (without importing it here)."""
    try:
        spec = importlib.util.find_spec(MODULE)
    except ValueError:  # sys.modules[MODULE] is None: an import blocked on purpose
        spec = None
    if spec is None:
        raise RuntimeMissing(f"no module named {MODULE}")
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeMissing(f"{MODULE} is importable but {PACKAGE} is not installed as a package") from None
    # the builder's compatibility layer (genai_child.compat_transformers) was written against 0.18
    if version.split(".")[:2] != PINNED.split(".")[:2]:
        raise RuntimeMissing(f"{PACKAGE} {version} is installed, this layer needs {PINNED}")


def versions() -> dict[str, str]:
    """Versions of the packages a GenAI build or measurement depends on ('' = not installed)."""
    out = {}
    for name in (PACKAGE, "onnxruntime", "transformers", "torch", "onnx-ir"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = ""
    return out


def _child_env(threads: int, home: Path) -> dict[str, str]:
    """The child's environment: offline, Hugging Face files under `home` (never the user's), `threads` wide."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # so `-m orchestrator...` works without an install too
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(home / "hf"),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
               # onnxruntime and og persist a telemetry device id under ~/.cache/Microsoft at import unless
               # told not to; XDG_CACHE_HOME catches anything else that would write a cache there
               ORT_DISABLE_TELEMETRY="1", XDG_CACHE_HOME=str(home / "cache"))
    return env


def _run_child(args: list[str], threads: int, work: Path, timeout_s: float, what: str,
               env: Mapping[str, str] | None = None) -> None:
    """Run the child with `args`; a failure, crash or timeout is a RuntimeError carrying its stderr's tail."""
    try:
        proc = subprocess.run([sys.executable, "-m", CHILD, *args], cwd=work,
                              env={**_child_env(threads, work), **(env or {})},
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or ""
        raise RuntimeError(f"{what} timed out after {timeout_s:.0f} s:\n{err[-_TAIL:]}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-_TAIL:]}")


def build(hf_dir: Path, out_dir: Path, precision: str, algorithm: str = "rtn", block_size: int = 32,
          threads: int = 1, timeout_s: float = 1800, extra_options: Mapping[str, str] | None = None) -> None:
    """Build a GenAI model folder (model.onnx + data, genai_config.json, tokenizer files) in `out_dir`.

    `hf_dir` is a save_pretrained folder (model and tokenizer). `algorithm` and `block_size` apply to the
    int4 and int8 precisions (weight-only MatMulNBits); `extra_options` are passed to the builder as they are
    (e.g. {"matmul_mixed_precision": "last_matmul:int8"}). Always for the CPU execution provider, with the full
    LM head kept so that every position's logits can be scored.
    """
    check_installed()
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: must be one of {', '.join(PRECISIONS)}")
    if algorithm not in INT4_ALGORITHMS:
        raise ValueError(f"algorithm {algorithm!r}: must be one of {', '.join(INT4_ALGORITHMS)}")
    if block_size not in BLOCK_SIZES:
        raise ValueError(f"block_size {block_size}: must be one of {', '.join(map(str, BLOCK_SIZES))}")
    hf_dir, out_dir = Path(hf_dir).resolve(), Path(out_dir).resolve()
    if not (hf_dir / "config.json").is_file():
        raise FileNotFoundError(f"{hf_dir} is not a save_pretrained folder (no config.json)")
    out_dir.mkdir(parents=True, exist_ok=True)
    # hf_token=false: never look for a login token (it lives in the home directory)
    options = {"hf_token": "false", "hf_remote": "false"}
    if precision in ("int4", "int8"):
        options.update(algo_config=algorithm, block_size=str(block_size))
    options.update(extra_options or {})
    with tempfile.TemporaryDirectory(prefix="genai-build-") as work:
        # -c: the builder's scratch (external data written before it is moved into out_dir)
        args = ["build", "-i", str(hf_dir), "-o", str(out_dir), "-p", precision, "-e", "cpu", "-c",
                str(Path(work) / "cache"), "--extra_options", *(f"{k}={v}" for k, v in options.items())]
        # the builder stamps `git rev-parse HEAD` of whatever repository holds site-packages into the graph's
        # producer_version (this project's commit when the venv sits in its checkout): no repository, and it
        # stamps the wheel's own commit, so the same inputs give the same bytes
        _run_child(args, threads, Path(work), timeout_s, f"the GenAI builder ({precision})",
                   env={"GIT_DIR": os.devnull})
    if not (out_dir / "genai_config.json").is_file():
        raise RuntimeError(f"the GenAI builder exited cleanly but left no genai_config.json in {out_dir}")


def measure_child(request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Measure a GenAI folder in a fresh child process and return its answer.

    request: `model` (GenAI folder), `threads`, `windows` (.npy of token ids, [n_windows, context + 1]),
    `prompt` (token ids), `decode_steps`, `warmup_steps`, `prefill_repeats`, optional `text` (str) and
    `greedy` ({"prompt": ids, "tokens": n}), optional `out_dir` (a folder for the files the answer names; default
    a new temporary folder that the caller then owns).
    answer: `nll` (total next-token NLL in nats over all windows), `tokens` (positions scored), `top1` (path of
    an .npy of the argmax per scored position, in window order), `prefill_ms` (list), `decode_ms` (list, per
    token), `load_ms`, `kv_bytes_per_token`, `peak_rss_mb` (the child's ru_maxrss), `n_vocab`, `text_ids`,
    `greedy_ids` (None when not asked for).
    """
    check_installed()
    request = dict(request)
    request["out_dir"] = str(Path(request.get("out_dir") or tempfile.mkdtemp(prefix="genai-measure-")).resolve())
    Path(request["out_dir"]).mkdir(parents=True, exist_ok=True)
    for key in ("model", "windows"):
        request[key] = str(Path(request[key]).resolve())
    with tempfile.TemporaryDirectory(prefix="genai-child-") as work:
        req, ans = Path(work) / "request.json", Path(work) / "answer.json"
        req.write_text(json.dumps(request))
        _run_child(["measure", str(req), str(ans)], int(request.get("threads", 1)), Path(work), timeout_s,
                   f"measuring {request['model']} with GenAI")
        return json.loads(ans.read_text())

