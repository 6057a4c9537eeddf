"""The executor interface: run a plan's nodes parent-first, report each result as it lands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.execute import Job, NodeResult
    from orchestrator.plan import Node, Plan


class Executor:
    """Schedules the per-node work (`compute_fn`, the same everywhere) over a plan.

    Implementations call `on_start(node)` before and `on_result(node, result)` after each node, and
    `orchestrator.execute.release` to learn which children may start (or are skipped).
    """

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def run(self, plan: Plan, make_job: Callable[[Node], Job], on_start: Callable[[Node], None],
            on_result: Callable[[Node, NodeResult], None],
            compute_fn: Callable[[Job], NodeResult]) -> dict[str, NodeResult]:
        """Compute every node of `plan`; returns the result of each by key."""
        raise NotImplementedError
