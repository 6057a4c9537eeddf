"""The executor contract: what a worker is given (`Job`), what it hands back (`NodeResult`) and how a node
ended (the statuses), the `Executor` interface, and `release`, the skip rule every executor shares.

Executors import only this module from the engine's walking side; `orchestrator.engine.execute` imports it
too and supplies the per-node work (`compute`), so neither side imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.config.executor import Resources

if TYPE_CHECKING:
    from orchestrator.engine.plan import Node, Plan
    from orchestrator.measure.evaluate import EvalSettings

DONE, CACHED, FAILED, SKIPPED = "done", "cached", "failed", "skipped"
GATED = "gated"  # measured and logged, but below the quality gate: its subtree is skipped (not a failure)
BLOCKING = (FAILED, SKIPPED, GATED)  # a node in one of these states does not feed its children


@dataclass(frozen=True)
class Job:
    """Everything a (possibly remote) worker needs to produce one node."""

    node: Node
    root_key: str
    task: dict[str, Any]
    seed: int
    cache_dir: str
    settings: EvalSettings
    export: dict[str, Any]
    max_loss: float | None = None  # gate.max_loss: the task's quality loss vs the root baseline (None = off)
    torch_threads: int = 1
    resources: Resources = field(default_factory=Resources)  # what the node asks of a worker (Ray)


@dataclass
class NodeResult:
    """How a node ended, its metrics, and where its measured ONNX model lies."""

    key: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    onnx_path: str | None = None
    executed: bool = False  # the stage itself ran in this invocation (not a cache hit)
    target_errors: dict[str, str] = field(default_factory=dict)  # target -> why its measurement failed
    worker: str = ""  # where it was computed, when the executor knows (Ray: node address and id, pid)
    refused: str = ""  # bad input only the node could find (a ConfigError): the CLI's one line, exit 2


class Executor:
    """Schedules the per-node work (`compute_fn`, the same everywhere) over a plan.

    Implementations call `on_start(node)` (or `on_start(node, worker)`) before and `on_result(node, result)`
    after each node, and `release` to learn which children may start (or are skipped).
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


def release(plan: Plan, node: Node, results: dict[str, NodeResult],
            on_result: Callable[[Node, NodeResult], None]) -> list[Node]:
    """Children that may start now; the subtree of a failed or gated node is marked skipped instead.

    The one place this rule lives: every executor calls it when a node's result lands.
    """
    if results[node.key].status not in BLOCKING:
        return plan.children(node.key)
    for child in plan.descendants(node.key):
        results[child.key] = NodeResult(child.key, SKIPPED, error=f"ancestor {node.key} {results[node.key].status}")
        on_result(child, results[child.key])
    return []
