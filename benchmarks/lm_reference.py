"""An independent perplexity measurement of an LM task's baseline, to check the orchestrator's number.

Loads the model straight from its source with transformers (no orchestrator model code, no ONNX), scores
the task's test windows with transformers' own shifted LM loss in torch, and compares the perplexity with
the baseline node's `perplexity` (ONNX Runtime, through the KV-cache export) from MLflow. Usage:

    python benchmarks/lm_reference.py --task smollm2 [--tracking-uri sqlite:///mlruns/mlflow.db]
        [--experiment ordering_study_llm]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any


def torch_perplexity(task: Any) -> tuple[float, int]:
    """exp(mean next-token loss) of the pretrained model over the task's test windows, and the tokens scored."""
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM

    source = Path(task.model_source())
    gguf = {"gguf_file": source.name} if source.suffix == ".gguf" else {}
    folder = source.parent if gguf else source
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **gguf).eval()
    losses = []
    with torch.no_grad():
        for window in task.splits["test"].ids:
            ids = torch.from_numpy(window[None])
            losses.append(model(input_ids=ids, labels=ids).loss.item())
    return math.exp(sum(losses) / len(losses)), task.splits["test"].tokens


def logged_perplexity(uri: str, experiment: str) -> float | None:
    """The latest baseline node run's perplexity in `experiment`, if any."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], "tags.`orchestrator.stage` = 'baseline'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].data.metrics.get("perplexity") if runs else None


def main(argv: list[str] | None = None) -> int:
    from orchestrator.tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="smollm2", choices=["smollm2", "lm"])
    parser.add_argument("--model", default="", help="task.model (default: the task's own)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    parser.add_argument("--experiment", default="ordering_study_llm")
    args = parser.parse_args(argv)
    cls = TASKS[args.task]
    task = cls(cls.Params(model=args.model), 0)
    start = time.perf_counter()
    ppl, tokens = torch_perplexity(task)
    print(f"torch (transformers' LM loss): perplexity {ppl:.4f} on {tokens} test tokens, context "
          f"{task.params.context} ({time.perf_counter() - start:.0f} s)")
    logged = logged_perplexity(args.tracking_uri, args.experiment)
    if logged is None:
        print(f"no baseline run in experiment {args.experiment!r} of {args.tracking_uri} to compare with")
        return 0
    print(f"orchestrator baseline (ONNX Runtime, KV-cache graph): perplexity {logged:.4f}; "
          f"difference {abs(logged - ppl) / ppl * 100:.3f}%")
    return 0 if abs(logged - ppl) <= 0.01 * ppl else 1


if __name__ == "__main__":
    sys.exit(main())
