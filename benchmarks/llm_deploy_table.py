"""Print the LLM deployment study from MLflow: KV-cache precision per chain, and the drafts ranked by speed-up.

Reads the latest sweep (parent run) of the `llm_deploy` experiment and its leaf runs. Run the study first,
e.g. `python -m orchestrator +recipe=llm_deploy task=smollm2`. Usage:

    python benchmarks/llm_deploy_table.py [--tracking-uri sqlite:///mlruns/mlflow.db] [--experiment llm_deploy]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ordering_table import LEAF, PARENT, latest_parent, table  # noqa: E402

VARIANT = "orchestrator.variant"
KV_COLUMNS = ["variant", "KV cache", "perplexity", "x ppl", "KV agree", "KV MB/1k tok", "tok/s", "size MB"]
KV_FORMATS = {"perplexity": "{:.2f}", "x ppl": "{:.3f}", "KV agree": "{:.3f}", "KV MB/1k tok": "{:.4g}",
              "tok/s": "{:.1f}", "size MB": "{:.1f}"}
SPEC_COLUMNS = ["draft", "speed-up", "accepted", "tok/round", "tok/s", "target tok/s", "draft MB", "same text"]
SPEC_FORMATS = {"speed-up": "{:.2f}x", "accepted": "{:.3f}", "tok/round": "{:.2f}", "tok/s": "{:.1f}",
                "target tok/s": "{:.1f}", "draft MB": "{:.1f}"}


def leaves(uri: str, experiment: str) -> list[Any]:
    """The leaf runs of the latest sweep."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r} in {uri}")
    parent = latest_parent(client, found.experiment_id)
    return client.search_runs([found.experiment_id], f"tags.`{PARENT}` = '{parent.info.run_id}' "
                              f"and tags.`{LEAF}` = 'true'", max_results=10000)


def kv_rows(runs: list[Any]) -> list[dict[str, Any]]:
    """One row per leaf: its KV-cache precision, quality and cache memory."""
    out = []
    for run in runs:
        m, params = run.data.metrics, run.data.params
        base = m.get("baseline/perplexity") or m.get("perplexity")
        out.append({"variant": run.data.tags.get(VARIANT, run.info.run_name),
                    "KV cache": params.get("kvcache.dtype", "fp32"), "perplexity": m.get("perplexity"),
                    "x ppl": m["perplexity"] / base if base and "perplexity" in m else None,
                    "KV agree": m.get("kv_agreement"), "KV MB/1k tok": m.get("kv_cache_mb_per_1k_tokens"),
                    "tok/s": m.get("decode_tokens_per_s"), "size MB": m.get("model_size_mb")})
    return sorted(out, key=lambda r: (r["variant"] != "baseline", r["variant"]))


def spec_rows(runs: list[Any]) -> list[dict[str, Any]]:
    """One row per leaf measured as a draft, fastest first."""
    out = []
    for run in runs:
        m = run.data.metrics
        if "spec_speedup" not in m:
            continue
        out.append({"draft": run.data.tags.get(VARIANT, run.info.run_name), "speed-up": m["spec_speedup"],
                    "accepted": m.get("spec_acceptance_rate"), "tok/round": m.get("spec_tokens_per_round"),
                    "tok/s": m.get("spec_tokens_per_s"), "target tok/s": m.get("spec_target_tokens_per_s"),
                    "draft MB": m.get("model_size_mb"),
                    "same text": "yes" if m.get("spec_identical") == 1.0 else "NO"})
    return sorted(out, key=lambda r: -r["speed-up"])


def verdict(drafts: list[dict[str, Any]]) -> str:
    """One line: the best draft, its measured speed-up and acceptance rate."""
    if not drafts:
        return "No draft measured (set eval.speculative.target=baseline)."
    best = drafts[0]
    same = all(d["same text"] == "yes" for d in drafts)
    return (f"Best draft: {best['draft']}: {best['speed-up']:.2f}x the baseline's own greedy decoding, "
            f"{best['accepted']:.1%} of proposed tokens accepted; generated text identical to the baseline's "
            f"for {'every' if same else 'NOT every'} draft.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    parser.add_argument("--experiment", default="llm_deploy")
    args = parser.parse_args(argv)
    runs = leaves(args.tracking_uri, args.experiment)
    drafts = spec_rows(runs)
    print(table(kv_rows(runs), KV_COLUMNS, KV_FORMATS))
    print("\n" + table(drafts, SPEC_COLUMNS, SPEC_FORMATS))
    print(f"\n{verdict(drafts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
