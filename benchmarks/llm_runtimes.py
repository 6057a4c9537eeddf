"""Print the LLM runtimes study from MLflow side by side: each leaf's format, runtime, size, perplexity, speed,
memory, and the decode speed the memory bandwidth would allow.

Reads the latest sweep (parent run) of the `llm_runtimes` experiment (`recipes/llm_runtimes.yaml`): ONNX leaves
measured in ONNX Runtime and GGUF leaves measured in llama.cpp, on the same test token ids. The last column is
the bandwidth limit: a decoding step reads every weight once, so tokens/s cannot exceed the copy bandwidth
measured here (numpy, one thread, median of 5 copies of 256 MB) divided by the file's bytes; a row far below
it leaves speed to software, not hardware. Run the study first, e.g.

    python -m orchestrator +recipe=llm_runtimes task=smollm2
    python benchmarks/llm_runtimes.py [--tracking-uri sqlite:///mlruns/mlflow.db] [--experiment llm_runtimes]
        [--cache .cache/orchestrator]

With `--cache` (the sweep's cache.dir) it also checks that the float model generates the same greedy text in
the three runtimes: 32 tokens after a fixed prompt from the baseline ONNX (ONNX Runtime), its F16 GGUF
(llama.cpp) and its fp32 GenAI folder (ONNX Runtime GenAI).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ordering_table import PIPELINE, latest_sweep  # noqa: E402
from ordering_table import table as markdown_table  # noqa: E402

COLUMNS = ["chain", "format", "runtime", "MB", "perplexity", "x ppl", "prefill ms", "tok/s", "RSS MB", "limit tok/s"]


def copy_bandwidth_gbs(mb: int = 256, repeats: int = 5) -> float:
    """Measured memory copy bandwidth (GB/s, read + write counted once each), median of `repeats`."""
    import numpy as np

    src = np.ones(mb * 2**20 // 8)
    dst = np.empty_like(src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    return 2 * src.nbytes / statistics.median(times) / 1e9


def rows(uri: str, experiment: str, bandwidth_gbs: float) -> list[dict[str, Any]]:
    """One row per leaf of the latest sweep, by perplexity (the baseline first)."""
    _, leaves = latest_sweep(uri, experiment)
    out = []
    for run in leaves:
        m, tags = run.data.metrics, run.data.tags
        base = m.get("baseline/perplexity")
        out.append({"chain": tags.get("orchestrator.variant") or tags.get(PIPELINE, "?"),
                    "format": tags.get("orchestrator.format", "?"), "runtime": tags.get("orchestrator.runtime", "?"),
                    "MB": m.get("model_size_mb"), "perplexity": m.get("perplexity"),
                    "x ppl": m["perplexity"] / base if base and "perplexity" in m else 1.0,
                    "prefill ms": m.get("prefill_ms"), "tok/s": m.get("decode_tokens_per_s"),
                    "RSS MB": m.get("peak_rss_mb"),
                    "limit tok/s": bandwidth_gbs * 1e3 / m["model_size_mb"] if m.get("model_size_mb") else None})
    return sorted(out, key=lambda r: (r["chain"] != "baseline", r["perplexity"] or float("inf")))


def table(data: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows."""
    return markdown_table(data, COLUMNS, {"MB": "{:.1f}", "perplexity": "{:.3f}", "x ppl": "{:.3f}",
                                          "prefill ms": "{:.0f}", "tok/s": "{:.1f}", "RSS MB": "{:.0f}",
                                          "limit tok/s": "{:.0f}"})


PROMPT = "The try statement specifies exception handlers and/or cleanup code for a group of statements"


def greedy_check(cache: Path, tokens: int = 32) -> str:
    """One line per runtime: does its float model's greedy text equal ONNX Runtime's (first difference)?"""
    import json

    from orchestrator.artifacts import llamacpp
    from orchestrator.measure.probe import session
    from orchestrator.tasks.lm.measure import greedy_ids
    from orchestrator.tasks.lm.runtimes import greedy

    metas = {m["key"]: (m, p.parent) for p in cache.rglob("meta.json") for m in [json.loads(p.read_text())]}

    def child(stage: str, key: str, value: str) -> tuple[dict, Path]:
        return next(v for v in metas.values() if v[0]["stage"] == stage and v[0]["params"].get(key) == value
                    and metas[v[0]["parent"]][0]["parent"] is None)

    gguf = child("gguf", "type", "F16")
    folder = metas[gguf[0]["parent"]][1]
    prompt = llamacpp.tokenize(gguf[1] / "model.gguf", PROMPT)["ids"]
    ours = greedy_ids(session(folder / "measured.onnx", 1), prompt, tokens)
    lines = []
    for name, ids in (("llama.cpp (F16 GGUF)", greedy("gguf", gguf[1] / "model.gguf", prompt, tokens)),
                      ("ONNX Runtime GenAI (fp32)", greedy("genai", child("genai", "precision", "fp32")[1], prompt,
                                                           tokens))):
        first = next((i for i, (a, b) in enumerate(zip(ours, ids, strict=True)) if a != b), None)
        lines.append(f"greedy text, {tokens} tokens, {name} vs ONNX Runtime: "
                     + ("identical" if first is None else f"differs from token {first + 1}"))
    return "\n".join(lines)


def main() -> None:
    """Print the table for the latest llm_runtimes sweep."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    parser.add_argument("--experiment", default="llm_runtimes")
    parser.add_argument("--cache", type=Path, help="the sweep's cache.dir: also compare the float models' greedy text")
    args = parser.parse_args()
    bandwidth = copy_bandwidth_gbs()
    print(f"copy bandwidth: {bandwidth:.1f} GB/s (numpy, 1 thread, median of 5)")
    print(table(rows(args.tracking_uri, args.experiment, bandwidth)))
    if args.cache:
        print(greedy_check(args.cache))


if __name__ == "__main__":
    main()
