"""Progress a person can read: one line per event, an estimate of the time left, a live display on a terminal.

Estimates come from the timings the cache already holds: every committed node records how long its stage
and its measurement took (`stage_seconds`, `measure_seconds` in meta.json), so a new node is expected to
take the median of the nodes of the same task and stage computed before (here or by a teammate sharing the
cache). A node with no such history is counted apart ("3 without history"), never guessed.

On a terminal, `rich.progress` draws below the event lines a sweep row (done / total nodes, elapsed, the
estimate of what is left) and one row per running node (its chain, stage, short key, worker, elapsed, left).
In a log (not a TTY: CI, a pipe, a file) only the event lines are written, each finished one carrying the
estimate of what is left; that format is parsed by people and tests, so it stays plain.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as LiveProgress
from rich.text import Text

from orchestrator.engine.cache import Cache
from orchestrator.engine.plan import BASELINE, Node, Plan
from orchestrator.tasks.quality import ACCURACY, Quality


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Estimator:
    """Expected compute seconds of a node, from the cached nodes of the same task and stage."""

    def __init__(self, cache: Cache) -> None:
        self.samples: dict[tuple[str, str], list[float]] = {}
        nodes = cache.root / "nodes"
        metas = {}
        for folder in nodes.iterdir() if nodes.is_dir() else ():
            try:
                metas[folder.name] = cache.meta(folder.name)
            except (OSError, ValueError):
                continue  # a folder being written or refused: no timing from it
        for meta in metas.values():
            seconds = float(meta.get("stage_seconds", 0.0)) + float(meta.get("measure_seconds", 0.0))
            task = _task_name(meta, metas)
            if task and seconds > 0:
                self.samples.setdefault((task, meta.get("stage", "")), []).append(seconds)

    def add(self, task: str, stage: str, seconds: float) -> None:
        """A timing measured during this sweep (later nodes of the same stage are estimated with it)."""
        self.samples.setdefault((task, stage), []).append(seconds)

    def seconds(self, task: str, node: Node) -> float | None:
        """The median of earlier timings of `node.stage` on `task`, or None when there are none."""
        found = self.samples.get((task, node.stage))
        return statistics.median(found) if found else None

    def total(self, task: str, nodes: Iterable[Node]) -> tuple[float, int]:
        """(expected seconds of the nodes with history, how many have none)."""
        known, unknown = 0.0, 0
        for node in nodes:
            guess = self.seconds(task, node)
            known, unknown = (known + guess, unknown) if guess is not None else (known, unknown + 1)
        return known, unknown


def _task_name(meta: dict[str, Any], metas: dict[str, dict[str, Any]]) -> str | None:
    """The task name of a cached node's root (the baseline's params carry it)."""
    seen = 0
    while meta.get("parent") and seen < 1000:
        meta, seen = metas.get(meta["parent"], {}), seen + 1
    return meta.get("params", {}).get("name") if meta.get("stage") == BASELINE else None


def estimate_text(known: float, unknown: int) -> str:
    """`~4m10s` (+ `3 nodes without cached timings`), or `unknown` when no node has history."""
    if unknown and not known:
        return "unknown (no cached timings of the same task and stage)"
    extra = f" + {unknown} node{'s' * (unknown != 1)} without cached timings" if unknown else ""
    return f"~{_clock(known)}{extra}"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-like stream without a terminal
        return False


class _Left(ProgressColumn):
    """`left ~…`: the sweep's estimate on its row, a running node's own on the node's (recomputed each redraw)."""

    def __init__(self, owner: Progress) -> None:
        super().__init__()
        self.owner = owner

    def render(self, task: Task) -> Text:
        key = task.fields.get("key")
        return Text(f"left {self.owner.remaining() if key is None else self.owner.node_left(key)}")


class _SweepBar(BarColumn):
    """The bar on the sweep's row only: a running node's row has no meaningful fraction."""

    def render(self, task: Task) -> Any:
        return super().render(task) if task.fields.get("key") is None else Text("")


class Progress:
    """Nodes done / total and the current stage, one line per event; a live `rich` display on a terminal."""

    def __init__(self, plan: Plan, task: str, estimator: Estimator | None = None, cached: Iterable[str] = (),
                 stream: TextIO | None = None, live: bool | None = None, console: Console | None = None,
                 quality: Quality = ACCURACY) -> None:
        self.plan, self.task, self.estimator = plan, task, estimator
        self.quality = quality  # the task's metric, shown on each finished node's line
        self.cached = set(cached)  # nodes already in the cache take no compute
        self.stream = stream or (console.file if console is not None else sys.stderr)
        self.total, self.done, self.start = len(plan.nodes), 0, time.perf_counter()
        self.running: dict[str, tuple[Node, float, str]] = {}  # key -> node, start, worker
        self.finished_keys: set[str] = set()
        self.lock = threading.Lock()  # rich redraws from its own thread while events arrive
        if live is None:  # the stream itself decides (rich alone would also honour FORCE_COLOR in a CI log)
            live = console.is_terminal if console is not None else _isatty(self.stream)
        self.live = live
        console = console or Console(file=self.stream, force_terminal=live, highlight=False)
        self.display: LiveProgress | None = None
        self.rows: dict[str, TaskID] = {}  # running node key -> its row in the display
        if self.live:
            self.display = self._display(console)
            self.sweep_row = self.display.add_task(f"sweep {task}", total=self.total, count=self._count())
            self.display.start()

    def _display(self, console: Console) -> LiveProgress:
        # Writes to the real stderr (and to stdout when it shares the terminal) go above the display instead of
        # through it; a stdout redirected to a file is left alone, so its content does not move to stderr.
        ours = console.file is sys.stderr
        return LiveProgress(SpinnerColumn(), TextColumn("{task.description}"), _SweepBar(bar_width=30),
                            TextColumn("{task.fields[count]}"), TimeElapsedColumn(), _Left(self), console=console,
                            redirect_stderr=ours, redirect_stdout=ours and sys.stdout.isatty())

    def _count(self) -> str:
        return f"{self.done}/{self.total} nodes · {len(self.running)} running"

    def _write(self, line: str) -> None:
        """An event line (on a terminal: printed above the live display, which rich redraws below it)."""
        if self.display is not None:
            self.display.refresh()  # rich redraws its last frame below a printed line: make it the current one
            self.display.console.print(Text(line), soft_wrap=True)  # Text: no markup read from a node's error
            return
        self.stream.write(line + "\n")
        self.stream.flush()

    def remaining(self) -> str:
        """The estimate of what is left: queued nodes in full, running ones minus their elapsed time."""
        if self.estimator is None:
            return "unknown"
        now, known, unknown = time.perf_counter(), 0.0, 0
        with self.lock:
            running = dict(self.running)
            done = self.finished_keys | self.cached
        for key, node in self.plan.nodes.items():
            if key in done:
                continue
            guess = self.estimator.seconds(self.task, node)
            if guess is None:
                unknown += 1
            else:
                started = running.get(key, (node, now, ""))[1]
                known += max(0.0, guess - (now - started))
        return estimate_text(known, unknown)

    def node_left(self, key: str) -> str:
        """The estimate of what is left of one running node (`?` without history)."""
        with self.lock:
            node, started, _ = self.running.get(key, (None, 0.0, ""))
        guess = self.estimator.seconds(self.task, node) if self.estimator and node else None
        return "?" if guess is None else f"~{_clock(max(0.0, guess - (time.perf_counter() - started)))}"

    def started(self, node: Node, where: str = "") -> None:
        """A node began computing (`where`: the worker, when the executor says)."""
        with self.lock:
            self.running[node.key] = (node, time.perf_counter(), where)
        params = " ".join(f"{k}={v}" for k, v in node.params.items()) if node.stage != BASELINE else ""
        on = f" on {where}" if where else ""
        if self.display is not None:
            self.rows[node.key] = self.display.add_task(f"  {node.pipeline}: {node.stage} {node.key[:8]}{on}",
                                                        total=None, count="", key=node.key)
            self.display.update(self.sweep_row, count=self._count())
        self._write(f"[{self.done + 1:>3}/{self.total}] {node.pipeline}: running {node.stage} {params}{on}")

    def finished(self, node: Node, result: Any) -> None:
        """A node is done (computed, cached or failed): its line, and the estimate learns its timing."""
        with self.lock:
            self.done += 1
            self.running.pop(node.key, None)
            self.finished_keys.add(node.key)
        if self.estimator is not None and result.executed:
            self.estimator.add(self.task, node.stage, result.seconds)
        if self.display is not None:  # before the line is printed, which redraws the display below it
            row = self.rows.pop(node.key, None)
            if row is not None:
                self.display.remove_task(row)
            self.display.update(self.sweep_row, completed=self.done, count=self._count())
        m = result.metrics
        lines = (result.error or "").strip().splitlines() or [""]
        # a traceback says most in its last line; a failure we could name says it in its first
        q = self.quality
        quality = f"{q.column}={q.fmt.format(m[q.metric])}" if q.metric in m else None
        detail = (f"{quality} size={m['model_size_mb']:.3f}MB p50={m['latency_p50_ms']:.3f}ms" if quality
                  else lines[-1] if lines[0].startswith("Traceback") else lines[0])
        left = f" (left {self.remaining()})" if self.done < self.total and not self.live else ""
        on = f" on {result.worker}" if getattr(result, "worker", "") else ""
        self._write(f"[{self.done:>3}/{self.total}] {node.pipeline}: {result.status} in {result.seconds:.1f}s{on} "
                    f"{detail}{left}")
        for target, why in result.target_errors.items():
            self._write(f"      {target} measurement failed (the node's other numbers stand): {why}")

    def close(self) -> None:
        """Stop the live display (its last state stays on screen); the event lines need no closing."""
        if self.display is not None:
            for row in self.rows.values():
                self.display.remove_task(row)
            self.rows.clear()
            self.display.update(self.sweep_row, completed=self.done, count=self._count())
            self.display.stop()
            self.display = None
