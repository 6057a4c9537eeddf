"""One invocation end to end: validate and plan, then execute with progress, tracking and the report."""

from __future__ import annotations

import sys
import time
from typing import Any

from orchestrator.cache import Cache
from orchestrator.config import discover_recipes, to_dict
from orchestrator.errors import ConfigError, PlanError
from orchestrator.evaluate import EvalSettings
from orchestrator.execute import CACHED, FAILED, SKIPPED, Job, NodeResult, execute
from orchestrator.plan import Node, Plan, plan
from orchestrator.report import markdown_table, variant_rows


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_plan(data: dict[str, Any], recipe: str | None) -> Plan:
    """Validate the resolved config and plan it; raises ConfigError/PlanError."""
    from orchestrator.stages import REGISTRY
    from orchestrator.tasks import TASKS

    if not recipe and not data.get("pipeline") and not data.get("orderings"):
        raise ConfigError("recipe", None, "select one with +recipe=NAME; available: "
                          + ", ".join(sorted(discover_recipes())))
    the_plan = plan(data, REGISTRY, TASKS)
    for node in the_plan.nodes.values():  # stage options the task cannot serve (e.g. shrink on a CNN)
        if node.parent is not None:
            stage = REGISTRY[node.stage]
            stage.check_task(stage.Params(**node.params), TASKS[the_plan.ancestors(node.key)[0].params["name"]])
    return the_plan


def node_label(plan_: Plan, node: Node) -> str:
    """The variant label where a variant ends at `node`, else its pipeline and short key."""
    for v in plan_.variants:
        if v.leaf == node.key:
            return v.label
    return f"{node.pipeline} ({node.key[:8]})"


def print_plan(plan_: Plan, cache: Cache) -> None:
    """The DAG as an indented tree, each node marked cached or new."""
    def show(node: Node, depth: int) -> None:
        mark = "cached" if cache.has(node.key) else "new"
        params = " ".join(f"{k}={v}" for k, v in node.params.items()) if node.stage != "baseline" else ""
        leaf = "  <- " + node_label(plan_, node) if node.key in plan_.leaves() else ""
        print(f"{'  ' * depth}- {node.stage} [{mark}] {node.key[:10]} {params}{leaf}")
        for child in plan_.children(node.key):
            show(child, depth + 1)

    for root in plan_.children(None):
        show(root, 0)
    new = sum(not cache.has(k) for k in plan_.nodes)
    print(f"{len(plan_.nodes)} nodes ({len(plan_.nodes) - new} cached, {new} new), {len(plan_.variants)} variants")


class Progress:
    """Nodes done / total and the current stage, one line per event on stderr."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def started(self, node: Node) -> None:
        params = " ".join(f"{k}={v}" for k, v in node.params.items()) if node.stage != "baseline" else ""
        _err(f"[{self.done + 1:>3}/{self.total}] {node.pipeline}: running {node.stage} {params}")

    def finished(self, node: Node, result: NodeResult) -> None:
        self.done += 1
        m = result.metrics
        detail = (f"acc={m['accuracy']:.4f} size={m['model_size_mb']:.3f}MB p50={m['latency_p50_ms']:.3f}ms"
                  if "accuracy" in m else (result.error or "").strip().splitlines()[-1:] or [""])
        detail = detail if isinstance(detail, str) else detail[0]
        _err(f"[{self.done:>3}/{self.total}] {node.pipeline}: {result.status} in {result.seconds:.1f}s {detail}")


def _tracker(data: dict[str, Any], recipe: str | None) -> Any:
    t = data["tracking"]
    if not t["enabled"]:
        return None
    from orchestrator.tracking import Tracker

    return Tracker(t["uri"], t["experiment"] or recipe or "adhoc", t["artifact_root"], t["log_models"])


def run_sweep(cfg: Any, recipe: str | None, config_yaml: str) -> int:
    """Run one invocation; returns the process exit code (0 ok, 1 a node failed, 2 bad input)."""
    try:
        data = to_dict(cfg)
        the_plan = build_plan(data, recipe)
    except (ConfigError, PlanError) as err:
        _err(f"error: {err}")
        return 2
    cache = Cache(data["cache"]["dir"])
    if data["dry_run"]:
        print_plan(the_plan, cache)
        return 0
    return _execute(data, the_plan, cache, recipe, config_yaml)


def _execute(data: dict[str, Any], the_plan: Plan, cache: Cache, recipe: str | None, config_yaml: str) -> int:
    tracker = _tracker(data, recipe)
    start = time.perf_counter()
    if tracker:
        tracker.start_sweep(recipe or "adhoc", config_yaml, {"orchestrator.recipe": recipe or "adhoc"})
    settings = EvalSettings(**data["eval"])

    def make_job(node: Node) -> Job:
        root = node if node.parent is None else the_plan.ancestors(node.key)[0]
        return Job(node, root.key, root.params, int(data["seed"]), str(cache.root), settings,
                   data["stages"].get("export", {}))

    progress = Progress(len(the_plan.nodes))
    results: dict[str, NodeResult] = {}

    def on_result(node: Node, result: NodeResult) -> None:
        results[node.key] = result
        progress.finished(node, result)
        if tracker:
            tracker.log_node(the_plan, node, result, results, node_label(the_plan, node))

    execute(the_plan, make_job, progress.started, on_result, data["executor"]["workers"])
    return _finish(the_plan, results, tracker, time.perf_counter() - start)


def _finish(the_plan: Plan, results: dict[str, NodeResult], tracker: Any, wall: float) -> int:
    """Print the report and the summary, close the parent run, pick the exit code."""
    table = markdown_table(variant_rows(the_plan, results))
    failed = [r for r in results.values() if r.status == FAILED]
    skipped = [r for r in results.values() if r.status == SKIPPED]
    executed = sum(r.executed for r in results.values())
    summary = {"nodes": len(the_plan.nodes), "stage_executions": executed,
               "cached_nodes": sum(r.status == CACHED for r in results.values()),
               "failed_nodes": len(failed), "skipped_nodes": len(skipped), "wall_seconds": wall}
    print("\n" + table + "\n")
    print(f"{summary['nodes']} unique nodes: {executed} stage executions, {summary['cached_nodes']} from cache, "
          f"{len(failed)} failed, {len(skipped)} skipped; {wall:.1f}s")
    for r in failed:
        _err(f"FAILED {r.key}:\n{r.error}")
    if tracker:
        tracker.end_sweep("FAILED" if failed else "FINISHED", summary, {"report.md": table})
        print(f"MLflow: parent run {tracker.parent_id} in {tracker.uri}")
    return 1 if failed else 0
