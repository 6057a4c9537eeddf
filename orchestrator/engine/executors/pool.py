"""The pool executor: independent branches of the DAG in worker processes (`executor.workers`)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from orchestrator.engine.executors.base import FAILED, Executor, Job, NodeResult, release
from orchestrator.engine.plan import Node, Plan

WORKER_TRIES = 2  # a node whose worker process dies this often is reported failed (its siblings go on)


class PoolExecutor(Executor):
    """Independent branches in `workers` spawned processes (they share the cache; locks keep nodes unique)."""

    def run(self, plan: Plan, make_job: Callable[[Node], Job], on_start: Callable[[Node], None],
            on_result: Callable[[Node, NodeResult], None],
            compute_fn: Callable[[Job], NodeResult]) -> dict[str, NodeResult]:
        return _run_pool(plan, make_job, on_start, on_result, self.workers, compute_fn)


def _run_pool(plan: Plan, make_job: Callable[[Node], Job], on_start: Callable[[Node], None],
              on_result: Callable[[Node, NodeResult], None], workers: int,
              compute_fn: Callable[[Job], NodeResult]) -> dict[str, NodeResult]:
    """The scheduling loop.

    A worker that dies (SIGKILL, the kernel's OOM killer) breaks the whole pool, and the pool cannot
    say which node it was computing. So every node that was running is resubmitted, and those that
    were running together are suspects that run alone from then on; a node that breaks the pool while
    alone is charged, and at WORKER_TRIES charges it is reported failed with that reason.
    """
    results: dict[str, NodeResult] = {}
    ready, running = plan.children(None), {}
    charged: dict[str, int] = {}
    suspects: set[str] = set()
    pool = _new_pool(workers)
    try:
        while ready or running:
            while ready and len(running) < workers and not _must_wait(ready[0], running, suspects):
                node = ready.pop(0)
                if node.key not in charged and node.key not in suspects:
                    on_start(node)
                running[pool.submit(compute_fn, make_job(node))] = node
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            if any(_died(f) for f in finished):  # the pool is gone: every running node went with it
                lost = list(running.values())
                running.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = _new_pool(workers)
                ready[:0] = _retry_or_fail(plan, lost, charged, suspects, results, on_result)
                continue
            for fut in finished:
                node = running.pop(fut)
                results[node.key] = fut.result()
                on_result(node, results[node.key])
                ready.extend(release(plan, node, results, on_result))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _must_wait(node: Node, running: dict[Future, Node], suspects: set[str]) -> bool:
    """A suspect runs alone, and nothing starts beside a running suspect."""
    return bool(running) and (node.key in suspects or any(n.key in suspects for n in running.values()))


def _new_pool(workers: int) -> ProcessPoolExecutor:
    import multiprocessing

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _died(fut: Future) -> bool:
    from concurrent.futures.process import BrokenProcessPool

    return isinstance(fut.exception(), BrokenProcessPool)


def _retry_or_fail(plan: Plan, lost: list[Node], charged: dict[str, int], suspects: set[str],
                   results: dict[str, NodeResult], on_result: Callable[[Node, NodeResult], None]) -> list[Node]:
    """Nodes to resubmit after the pool broke; a node alone in it is charged, and failed at WORKER_TRIES."""
    if len(lost) > 1:
        suspects.update(n.key for n in lost)
        return lost
    node = lost[0]
    charged[node.key] = charged.get(node.key, 0) + 1
    if charged[node.key] < WORKER_TRIES:
        return lost
    results[node.key] = NodeResult(node.key, FAILED, error=(
        f"the worker process computing {node.stage} died {charged[node.key]} times (killed by a signal, "
        "e.g. the kernel's out-of-memory killer); its siblings went on"))
    on_result(node, results[node.key])
    release(plan, node, results, on_result)
    return []
