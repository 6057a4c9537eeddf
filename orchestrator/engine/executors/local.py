"""The local executor: nodes one after another in this process, depth-first.

Several invocations may share one cache (one machine, or several over a filesystem with POSIX locks):
a node whose lock another process holds is deferred while this one does other ready work.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from orchestrator.engine.cache import open_cache
from orchestrator.engine.executors.base import Executor, Job, NodeResult, release
from orchestrator.engine.plan import Node, Plan


class LocalExecutor(Executor):
    """Depth-first in this process: a branch finishes before its siblings start."""

    def run(self, plan: Plan, make_job: Callable[[Node], Job], on_start: Callable[[Node], None],
            on_result: Callable[[Node, NodeResult], None],
            compute_fn: Callable[[Job], NodeResult]) -> dict[str, NodeResult]:
        results: dict[str, NodeResult] = {}
        stack = plan.children(None)[::-1]  # depth-first: a branch finishes before its siblings start
        deferred: list[Node] = []  # nodes another process is computing right now
        while stack or deferred:
            node = stack.pop() if stack else deferred.pop(0)
            job = make_job(node)
            if (stack or deferred) and _busy(job):
                # another sweep on the same cache is computing it: do other work, come back later
                deferred.append(node)
                if not stack:
                    time.sleep(0.2)
                continue
            on_start(node)
            results[node.key] = compute_fn(job)
            on_result(node, results[node.key])
            stack.extend(release(plan, node, results, on_result)[::-1])
        return results


def _busy(job: Job) -> bool:
    """Whether another process holds the lock of an unfinished node (only real jobs carry a cache)."""
    cache_dir = getattr(job, "cache_dir", None)
    if cache_dir is None:
        return False
    cache = open_cache(cache_dir, sweep=False)
    return not cache.has(job.node.key) and cache.locked(job.node.key)
