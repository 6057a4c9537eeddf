"""One invocation end to end: validate and plan, then execute with progress, tracking and the report."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import yaml

from orchestrator import faults, searching
from orchestrator.config.chains import named_stages
from orchestrator.config.executor import ExecutorConfig, Resources
from orchestrator.config.schema import discover_recipes
from orchestrator.config.settings import Settings, settle
from orchestrator.engine import preflight, space
from orchestrator.engine.cache import Cache, is_url, mirror_dir, open_cache
from orchestrator.engine.execute import execute
from orchestrator.engine.executors import Executor, executor_for
from orchestrator.engine.executors.base import CACHED, FAILED, GATED, SKIPPED, Job, NodeResult
from orchestrator.engine.fingerprint import Fingerprints
from orchestrator.engine.plan import Keying, Node, Plan, plan
from orchestrator.errors import ConfigError, PlanError
from orchestrator.measure import targets
from orchestrator.measure.evaluate import environment
from orchestrator.report.pareto import Constraints
from orchestrator.report.progress import Estimator, Progress, estimate_text
from orchestrator.report.tradeoff import build, publish, render, rows_from_results, task_notes
from orchestrator.tracking.logbook import Logbook


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pinned_keys(overrides: list[str]) -> frozenset[str]:
    """Dotted keys set by `key=value` command-line overrides (`+`/`++` prefixes dropped)."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    return frozenset(keys)


def keying_for(data: dict[str, Any]) -> Keying:
    """Fingerprints memoised beside the cache (so reruns do not re-hash big files) and installed versions."""
    folder = data["cache"]["dir"]  # (a remote cache keeps them in this machine's mirror)
    return Keying(Fingerprints((mirror_dir(folder) if is_url(folder) else Path(folder)) / "fingerprints.json"))


def build_plan(data: dict[str, Any], recipe: str | None, pinned: frozenset[str] = frozenset(),
               keying: Keying | None = None) -> Plan:
    """Validate the resolved config and plan it; raises ConfigError/PlanError."""
    from orchestrator.stages import REGISTRY
    from orchestrator.tasks import TASKS

    if not recipe and not data.get("pipeline") and not data.get("orderings"):
        raise ConfigError("recipe", None, "select one with +recipe=NAME; available: "
                          + ", ".join(sorted(discover_recipes())))
    for key in sorted(pinned & set(data.get("sweep") or {})):
        _err(f"note: {key} is set on the command line, so the recipe's sweep over it is dropped")
    if pinned & {"pipeline", "orderings"}:
        written = named_stages(data)
        for key in sorted(k for k in data.get("sweep") or {} if k.split(".")[0] == "stages"
                          and k.split(".")[1] not in written | {"baseline", "export"}):
            _err(f"note: the recipe's sweep over {key} has no effect: no chain given on the command line has a "
                 f"{key.split('.')[1]} step")
    if ((data.get("search") or {}).get("strategy") or "grid") != "grid":  # the points a search may visit, probed
        return space.probe_plan(data, REGISTRY, TASKS, pinned, keying)
    return plan(data, REGISTRY, TASKS, pinned, keying)


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
    new = [n for k, n in plan_.nodes.items() if not cache.has(k)]
    print(f"{len(plan_.nodes)} nodes ({len(plan_.nodes) - len(new)} cached, {len(new)} new), "
          f"{len(plan_.variants)} variants")
    if new:
        task = next(iter(plan_.children(None))).params.get("name", "")
        known, unknown = Estimator(cache).total(task, new)
        how = " (medians of the cached timings of the same task and stage)" if known else ""
        print(f"estimated compute of the {len(new)} new nodes: {estimate_text(known, unknown)}{how}")


def threads_per_worker(executor: ExecutorConfig, resources: Resources | None = None, default: int = 0) -> int:
    """executor.torch_threads (unset: the task's `default`), with 0 resolved to the cores a worker has: on Ray
    the CPUs its stage requests, else this machine's cores divided among the workers."""
    import os

    threads = default if executor.torch_threads is None else executor.torch_threads
    if threads:
        return threads
    if executor.kind == "ray":
        return max(1, int((resources or Resources()).num_cpus))
    return max(1, (os.cpu_count() or 1) // executor.workers)


def _tracker(settings: Settings) -> Any:
    t = settings.tracking
    if not t.enabled:
        return None
    from orchestrator.tracking.tracker import Tracker

    return Tracker(t.uri, settings.experiment, t.artifact_root, t.log_models)


def run_sweep(data: dict[str, Any], recipe: str | None, overrides: list[str] | None = None) -> int:
    """Run one invocation of the resolved config `data`; returns the exit code (0 ok, 1 a node failed, 2 bad input)."""
    keying = keying_for(data)
    try:
        the_plan = build_plan(data, recipe, pinned_keys(overrides or []), keying)
        settings = settle(data, recipe)  # everything below reads this typed, frozen view, not `data`
    except (ConfigError, PlanError) as err:
        _err(f"error: {err}")
        return 2
    executor = executor_for(settings.executor)
    try:  # before any compute: the cache, the tracking store and the executor must be usable
        from orchestrator.tasks import TASKS

        preflight.check_cache(settings.cache.dir)
        preflight.check_plan(the_plan, TASKS)  # model and data files, the steps' runtimes; dry runs included
        if not settings.dry_run:
            preflight.check_tracking(vars(settings.tracking))
            targets.check(settings.eval)
            if settings.search.strategy != "grid":
                searching.check_storage(settings, pinned_keys(overrides or []))
            executor.prepare({n.stage: settings.resources[n.stage] for n in the_plan.nodes.values()
                              if n.stage in settings.resources})
    except ConfigError as err:
        executor.close()
        _err(f"error: {err}")
        return 2
    try:
        return _prepared(settings, the_plan, keying, executor, pinned_keys(overrides or []))
    finally:
        executor.close()


def _prepared(settings: Settings, the_plan: Plan, keying: Keying, executor: Executor,
              pinned: frozenset[str] = frozenset()) -> int:
    """The rest of a sweep once everything it needs answered: the plan (dry run) or the computation."""
    keying.fingerprints.save()
    cache = open_cache(settings.cache.dir)
    is_search = settings.search.strategy != "grid"
    if settings.dry_run:
        if is_search:
            from orchestrator.stages import REGISTRY

            print(space.describe(dict(settings.data), settings.search, pinned, REGISTRY,
                                 *searching.study_of(settings, pinned)))
        else:
            print_plan(the_plan, cache)
        return 0
    try:
        tracker = _tracker(settings)
    except Exception as err:  # the probe passed but the store still refused us: nothing was computed yet
        _err(f"error: tracking.uri={settings.tracking.uri!r} is not allowed: the store refused to open "
             f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); {preflight.LOCAL_HINT}")
        return 2
    book = Logbook(tracker, settings.tracking.uri)
    if is_search:
        return _execute(settings, Plan(), cache, book, executor, (keying, pinned))
    return _execute(settings, the_plan, cache, book, executor)


def _execute(settings: Settings, the_plan: Plan, cache: Cache, book: Logbook, executor: Executor,
             search_with: tuple[Keying, frozenset[str]] | None = None) -> int:
    from orchestrator.tasks import TASKS

    tracker = book.tracker
    start = time.perf_counter()
    task_cls = TASKS[settings.task]  # its quality contract: the gate, the run view and the report read it
    gate_loss = settings.gate_loss(task_cls.quality)
    # where and how the numbers were taken: on the parent and on every node run
    env = {"orchestrator.env.threads": str(settings.eval.threads),
           **{f"orchestrator.env.{k}": v for k, v in environment().items()}, **targets.tags(settings.eval)}
    if tracker:
        tracker.quality = task_cls.quality
        book.call("the sweep's parent run", tracker.start_sweep, settings.title,
                  yaml.safe_dump(dict(settings.data), sort_keys=False),
                  {"orchestrator.recipe": settings.title, "orchestrator.task": settings.task, **env}, env)

    def make_job(node: Node) -> Job:
        root = node if node.parent is None else the_plan.ancestors(node.key)[0]
        res = settings.resources_of(node.stage)
        threads = threads_per_worker(settings.executor, res, TASKS[root.params["name"]].torch_threads)
        return Job(node, root.key, root.params, settings.seed, cache.location, settings.eval, dict(settings.export),
                   gate_loss, torch_threads=threads, resources=res)

    progress = Progress(the_plan, settings.task, Estimator(cache), [k for k in the_plan.nodes if cache.has(k)],
                        quality=task_cls.quality)
    results: dict[str, NodeResult] = {}

    def on_start(node: Node, *where: str) -> None:
        if node.key not in results:  # (a search's later trial meets nodes an earlier one computed)
            progress.total = max(progress.total, len(the_plan.nodes))
            progress.started(node, *where)

    def on_result(node: Node, result: NodeResult) -> None:
        if node.key in results:
            return
        results[node.key] = result
        progress.finished(node, result)
        book.call(f"node {node.key[:10]}", tracker.log_node if tracker else None, the_plan, node, result, results,
                  counts=True)

    try:
        if search_with:
            searching.run(settings, the_plan, *search_with, lambda p: execute(p, make_job, on_start, on_result,
                                                                      executor=executor), results, tracker)
        else:
            execute(the_plan, make_job, on_start, on_result, executor=executor)
    finally:
        progress.close()
    report = build(rows_from_results(the_plan, results), Constraints.from_dict(vars(settings.report),
                                                                               task_cls.quality), task_cls.columns)
    report.notes = task_notes(task_cls, report.rows)
    faults.point("report")
    book.call("the report", publish if tracker else None, tracker, report, settings.title, env)
    name = settings.report.register
    if name and tracker and report.rec.row is not None:  # how a team hands the pick to deployment
        row = report.rec.row
        tags = {"orchestrator.variant": row.label, "orchestrator.node_key": row.key,
                "orchestrator.sweep_run_id": str(tracker.parent_id), "orchestrator.recipe": settings.title,
                **{f"metric.{k}": f"{v:.6g}" for k, v in row.metrics.items() if isinstance(v, float)}}
        version = book.call("registering the model", tracker.register, name, row.key, tags)
        if version:
            print(f"Registered {row.label} as {name} version {version} in the MLflow Model Registry")
    return _finish(the_plan, results, book, time.perf_counter() - start, render(report))


def _finish(the_plan: Plan, results: dict[str, NodeResult], book: Logbook, wall: float, table: str) -> int:
    """Print the report and the summary, close the parent run, pick the exit code."""
    failed = [r for r in results.values() if r.status == FAILED]
    gated = [r for r in results.values() if r.status == GATED]
    skipped = [r for r in results.values() if r.status == SKIPPED]
    executed = sum(r.executed for r in results.values())
    summary = {"nodes": len(the_plan.nodes), "stage_executions": executed,
               "cached_nodes": sum(r.status == CACHED for r in results.values()),
               "failed_nodes": len(failed), "skipped_nodes": len(skipped), "gated_nodes": len(gated),
               "wall_seconds": wall}
    print("\n" + table + "\n")
    print(f"{summary['nodes']} unique nodes: {executed} stage executions, {summary['cached_nodes']} from cache, "
          f"{len(failed)} failed, {len(gated)} gated, {len(skipped)} skipped; {wall:.1f}s")
    for r in gated:
        print(f"GATED {r.key[:10]}: {r.error}")
    for r in failed:
        if not r.refused:
            _err(f"FAILED {r.key}:\n{r.error}")
    tracker = book.tracker
    book.call("the sweep's summary", tracker.end_sweep if tracker else None,
              "FAILED" if failed else "FINISHED", summary, {})
    refused = sorted({r.refused for r in failed if r.refused})
    for line in refused:  # bad input a node found: the same one line as a refusal before compute
        _err(f"error: {line}")
    if book.down:
        _err(book.summary())
        return 2 if refused else 1
    if tracker:
        print(f"MLflow: parent run {tracker.parent_id} in {tracker.uri}")
    return 2 if refused else 1 if failed else 0
