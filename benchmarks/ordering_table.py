"""Print the ordering-study table from MLflow: order, precision, ratio, accuracy, size, p50 latency.

Reads the latest `ordering_study` parent run (the newest run without a parent in that experiment) and
its leaf runs. Usage:

    python benchmarks/ordering_table.py [--tracking-uri sqlite:///mlruns/mlflow.db] [--experiment ordering_study]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

PARENT, LEAF, PIPELINE = "mlflow.parentRunId", "orchestrator.leaf", "orchestrator.pipeline"
COLUMNS = ["order", "precision", "ratio", "accuracy", "size MB", "p50 ms"]


def latest_parent(client: Any, experiment_id: str) -> Any:
    """The newest run of the experiment that is not a child run (one sweep = one parent run)."""
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=1000)
    for run in runs:
        if PARENT not in run.data.tags:
            return run
    raise SystemExit(f"no parent run in experiment {experiment_id}")


def precision(params: dict[str, str]) -> str:
    """The precision a chain ends in: the ONNX quantize mode, the fake-quantization mode, else fp32."""
    return params.get("quantize.mode") or params.get("fakequant.mode") or "fp32"


def latest_sweep(uri: str, experiment: str) -> tuple[Any, list[Any]]:
    """The latest sweep (parent run) of `experiment` in the store at `uri`, and its leaf runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r} in {uri}")
    parent = latest_parent(client, found.experiment_id)
    return parent, client.search_runs([found.experiment_id], f"tags.`{PARENT}` = '{parent.info.run_id}' "
                                      f"and tags.`{LEAF}` = 'true'", max_results=10000)


def rows(uri: str, experiment: str) -> list[dict[str, Any]]:
    """One row per leaf run of the latest sweep, sorted by chain length, order, precision and ratio."""
    _, leaves = latest_sweep(uri, experiment)
    out = []
    for run in leaves:
        params, metrics = run.data.params, run.data.metrics
        out.append({"order": run.data.tags.get(PIPELINE, "?"), "precision": precision(params),
                    "ratio": params.get("prune.ratio", "-"), "accuracy": metrics.get("accuracy"),
                    "size MB": metrics.get("model_size_mb"), "p50 ms": metrics.get("latency_p50_ms")})
    return sorted(out, key=lambda r: (r["order"].count(">"), r["order"], r["precision"], r["ratio"]))


FORMATS = {"accuracy": "{:.4f}", "size MB": "{:.3f}", "p50 ms": "{:.3f}"}


def table(data: list[dict[str, Any]], columns: list[str] = COLUMNS, fmt: dict[str, str] = FORMATS) -> str:
    """A Markdown table of the rows (`columns` in order, each formatted by `fmt`, '-' when missing)."""

    def cell(row: dict[str, Any], col: str) -> str:
        value = row[col]
        return "-" if value is None else fmt.get(col, "{}").format(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r, c) for c in columns) + " |" for r in data]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    parser.add_argument("--experiment", default="ordering_study")
    args = parser.parse_args(argv)
    data = rows(args.tracking_uri, args.experiment)
    print(table(data))
    print(f"\n{len(data)} leaves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
