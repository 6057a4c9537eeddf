"""Executors: where the nodes of a plan are computed. Adding one = its module + a line here + a test."""

from __future__ import annotations

from orchestrator.executors.base import Executor


def executor_for(workers: int) -> Executor:
    """The local executor for one worker, the process pool for more."""
    from orchestrator.executors.local import LocalExecutor
    from orchestrator.executors.pool import PoolExecutor

    return LocalExecutor(workers) if workers <= 1 else PoolExecutor(workers)


__all__ = ["Executor", "executor_for"]
