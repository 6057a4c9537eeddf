"""Progress a person can read: one line per event, an estimate of the time left, a live status on a terminal.

Estimates come from the timings the cache already holds: every committed node records how long its stage
and its measurement took (`stage_seconds`, `measure_seconds` in meta.json), so a new node is expected to
take the median of the nodes of the same task and stage computed before (here or by a teammate sharing the
cache). A node with no such history is counted apart ("3 without history"), never guessed. On a terminal a
status line (done / running / queued, each running node's stage and elapsed time, elapsed, remaining) is
redrawn below the event lines every second; in a log (not a TTY) only the event lines are written, each
finished one carrying the estimate of what is left.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

from orchestrator.engine.cache import Cache
from orchestrator.engine.plan import BASELINE, Node, Plan


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


class Progress:
    """Nodes done / total and the current stage, one line per event; a live status line on a terminal."""

    def __init__(self, plan: Plan, task: str, estimator: Estimator | None = None, cached: Iterable[str] = (),
                 stream: TextIO | None = None, live: bool | None = None) -> None:
        self.plan, self.task, self.estimator = plan, task, estimator
        self.cached = set(cached)  # nodes already in the cache take no compute
        self.stream = stream or sys.stderr
        self.total, self.done, self.start = len(plan.nodes), 0, time.perf_counter()
        self.running: dict[str, tuple[Node, float, str]] = {}  # key -> node, start, worker
        self.finished_keys: set[str] = set()
        self.live = self.stream.isatty() if live is None else live
        self.lock = threading.Lock()
        self.ticker: threading.Thread | None = None
        if self.live:
            self.ticker = threading.Thread(target=self._tick, daemon=True)
            self.ticker.start()

    def _write(self, line: str) -> None:
        """An event line (above the live status, which is redrawn after it)."""
        with self.lock:
            self.stream.write(("\r\x1b[K" if self.live else "") + line + "\n")
            if self.live:
                self.stream.write(self.status())
            self.stream.flush()

    def _tick(self) -> None:
        while self.done < self.total:
            time.sleep(1.0)
            with self.lock:
                self.stream.write("\r\x1b[K" + self.status())
                self.stream.flush()

    def remaining(self) -> str:
        """The estimate of what is left: queued nodes in full, running ones minus their elapsed time."""
        if self.estimator is None:
            return "unknown"
        now, known, unknown = time.perf_counter(), 0.0, 0
        for key, node in self.plan.nodes.items():
            if key in self.finished_keys or key in self.cached:
                continue
            guess = self.estimator.seconds(self.task, node)
            if guess is None:
                unknown += 1
            else:
                started = self.running.get(key, (node, now, ""))[1]
                known += max(0.0, guess - (now - started))
        return estimate_text(known, unknown)

    def status(self) -> str:
        """One line: done / running (stage, elapsed) / queued, elapsed, left."""
        now = time.perf_counter()
        running = ", ".join(f"{n.pipeline} ({n.stage}{' on ' + w if w else ''}, {_clock(now - t)})"
                            for n, t, w in self.running.values())
        queued = self.total - self.done - len(self.running)
        return (f"{self.done}/{self.total} done · running: {running or '-'} · {queued} queued · elapsed "
                f"{_clock(now - self.start)} · left {self.remaining()}")

    def started(self, node: Node, where: str = "") -> None:
        """A node began computing (`where`: the worker, when the executor says)."""
        self.running[node.key] = (node, time.perf_counter(), where)
        params = " ".join(f"{k}={v}" for k, v in node.params.items()) if node.stage != BASELINE else ""
        on = f" on {where}" if where else ""
        self._write(f"[{self.done + 1:>3}/{self.total}] {node.pipeline}: running {node.stage} {params}{on}")

    def finished(self, node: Node, result: Any) -> None:
        self.done += 1
        self.running.pop(node.key, None)
        self.finished_keys.add(node.key)
        if self.estimator is not None and result.executed:
            self.estimator.add(self.task, node.stage, result.seconds)
        m = result.metrics
        lines = (result.error or "").strip().splitlines() or [""]
        # a traceback says most in its last line; a failure we could name says it in its first
        quality = (f"acc={m['accuracy']:.4f}" if "accuracy" in m else
                   f"ppl={m['perplexity']:.4g}" if "perplexity" in m else None)
        detail = (f"{quality} size={m['model_size_mb']:.3f}MB p50={m['latency_p50_ms']:.3f}ms" if quality
                  else lines[-1] if lines[0].startswith("Traceback") else lines[0])
        left = f" (left {self.remaining()})" if self.done < self.total and not self.live else ""
        on = f" on {result.worker}" if getattr(result, "worker", "") else ""
        self._write(f"[{self.done:>3}/{self.total}] {node.pipeline}: {result.status} in {result.seconds:.1f}s{on} "
                    f"{detail}{left}")
        for target, why in result.target_errors.items():
            self._write(f"      {target} measurement failed (the node's other numbers stand): {why}")

    def close(self) -> None:
        """Stop the live line (leaves the last status on screen)."""
        self.done = self.total
        if self.live:
            with self.lock:
                self.stream.write("\r\x1b[K" + self.status() + "\n")
                self.stream.flush()
