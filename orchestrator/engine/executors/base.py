"""The executor interface: run a plan's nodes parent-first, report each result as it lands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.config.executor import Resources
    from orchestrator.engine.execute import Job, NodeResult
    from orchestrator.engine.plan import Node, Plan


class Executor:
    """Schedules the per-node work (`compute_fn`, the same everywhere) over a plan.

    Implementations call `on_start(node)` (or `on_start(node, worker)`) before and `on_result(node, result)`
    after each node, and `orchestrator.engine.execute.release` to learn which children may start (or are skipped).
    """

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def prepare(self, needs: dict[str, Resources]) -> None:
        """Before any compute: connect, and check that every stage's `needs` can be served (ConfigError if not)."""

    def run(self, plan: Plan, make_job: Callable[[Node], Job], on_start: Callable[..., None],
            on_result: Callable[[Node, NodeResult], None],
            compute_fn: Callable[[Job], NodeResult]) -> dict[str, NodeResult]:
        """Compute every node of `plan`; returns the result of each by key."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what `prepare` acquired (e.g. a local Ray started for this sweep)."""
