"""Print the low-bit weight-only variants of the latest sweep side by side: each 4-bit leaf against its float
parent (the model right before the quantizing steps), with what its calibration cost.

For every leaf that ends in a weight-only quantizer (`quantize` int4 with `stages.quantize.algorithm`, `gguf`,
`genai`), with or without `awq` before it: perplexity, perplexity / its float parent's, size, decode tokens/s
and the seconds its quantizing steps took (`awq_seconds` of the awq node + the quantizer's own seconds). The
float parent is the node before `awq` (or before the quantizer): the baseline, or e.g. `prune>distill`. Run the
sweep first, e.g. on SmolLM2 (the commands the README's tables came from):

    python -m orchestrator task=smollm2 'orderings=[[quantize],[awq,quantize],[gguf],[awq,gguf]]' \\
        '++sweep={stages.gguf.type: [Q4_0, IQ4_NL]}' stages.quantize.mode=int4 eval.threads=1
    python benchmarks/lowbit_table.py [--tracking-uri sqlite:///mlruns/mlflow.db] [--experiment adhoc]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ordering_table import LEAF, PARENT, PIPELINE, latest_sweep  # noqa: E402
from ordering_table import table as markdown_table  # noqa: E402

QUANTIZERS = ("quantize", "gguf", "genai")
COLUMNS = ["variant", "parent", "parent ppl", "perplexity", "x parent", "MB", "tok/s", "quantize s"]
FORMATS = {"parent ppl": "{:.2f}", "perplexity": "{:.2f}", "x parent": "{:.3f}", "MB": "{:.1f}", "tok/s": "{:.1f}",
           "quantize s": "{:.1f}"}


def _steps(pipeline: str) -> list[str]:
    return [] if pipeline in ("", "baseline") else pipeline.split(">")


def float_parent(pipeline: str) -> str:
    """The chain before its quantizing steps (`prune>distill>awq>gguf` -> `prune>distill`; `gguf` -> baseline)."""
    steps = _steps(pipeline)
    while steps and steps[-1] in (*QUANTIZERS, "awq", "export"):
        steps.pop()
    return ">".join(steps) or "baseline"


def rows(uri: str, experiment: str) -> list[dict[str, Any]]:
    """One row per low-bit leaf of the latest sweep of `experiment`, by parent then perplexity."""
    from mlflow.tracking import MlflowClient

    parent_run, leaves = latest_sweep(uri, experiment)
    client = MlflowClient(tracking_uri=uri)
    nodes = client.search_runs([parent_run.info.experiment_id], f"tags.`{PARENT}` = '{parent_run.info.run_id}'",
                               max_results=10000)
    by_chain = {r.data.tags.get(PIPELINE, ""): r.data.metrics for r in nodes}
    out = []
    for run in leaves:
        chain, m = run.data.tags.get(PIPELINE, ""), run.data.metrics
        if run.data.tags.get(LEAF) != "true" or not _steps(chain) or _steps(chain)[-1] not in QUANTIZERS:
            continue
        parent = float_parent(chain)
        parent_ppl = by_chain.get("" if parent == "baseline" else parent, {}).get("perplexity") \
            or by_chain.get(parent, {}).get("perplexity") or m.get(f"{parent.split('>')[-1]}/perplexity")
        awq_chain = chain[:chain.rindex(">")] if ">awq>" in f">{chain}" else ""
        seconds = (by_chain.get(awq_chain, {}).get("awq_seconds", 0.0) if awq_chain.endswith("awq") else 0.0) \
            + m.get("quant_seconds", 0.0) + m.get("gguf_quantize_seconds", 0.0) + m.get("genai_build_seconds", 0.0)
        out.append({"variant": run.data.tags.get("orchestrator.variant") or chain, "parent": parent,
                    "parent ppl": parent_ppl, "perplexity": m.get("perplexity"),
                    "x parent": m["perplexity"] / parent_ppl if parent_ppl and "perplexity" in m else None,
                    "MB": m.get("model_size_mb"), "tok/s": m.get("decode_tokens_per_s"), "quantize s": seconds})
    return sorted(out, key=lambda r: (r["parent"], r["perplexity"] or float("inf")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    ap.add_argument("--experiment", default="adhoc")
    args = ap.parse_args(argv)
    data = rows(args.tracking_uri, args.experiment)
    if not data:
        raise SystemExit(f"no low-bit leaf (ending in {', '.join(QUANTIZERS)}) in the latest sweep of "
                         f"{args.experiment!r}")
    print(markdown_table(data, COLUMNS, FORMATS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
