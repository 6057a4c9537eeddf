"""Executors: where the nodes of a plan are computed. Adding one = its module + a line here + a test."""

from __future__ import annotations

from typing import Any

from orchestrator.engine.executors.base import Executor


def executor_for(executor: int | dict[str, Any] | Any) -> Executor:
    """The executor an `executor.*` config (or a worker count) selects: local for one worker, the process
    pool for more (kind local or pool), Ray for kind ray."""
    from orchestrator.config.executor import ExecutorConfig
    from orchestrator.config.typed import build
    from orchestrator.engine.executors.local import LocalExecutor
    from orchestrator.engine.executors.pool import PoolExecutor

    cfg = executor if isinstance(executor, ExecutorConfig) else build(
        "executor", ExecutorConfig, {"workers": executor} if isinstance(executor, int) else executor)
    if cfg.kind == "ray":
        from orchestrator.engine.executors.ray import RayExecutor

        return RayExecutor(cfg)
    return LocalExecutor(cfg.workers) if cfg.workers <= 1 else PoolExecutor(cfg.workers)


__all__ = ["Executor", "executor_for"]
