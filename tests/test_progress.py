"""Progress: estimates from the cache's own timings, the live display, the plain log lines, the dry run's estimate."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_cli
from rich.console import Console

from orchestrator.engine.cache import Cache
from orchestrator.engine.plan import Node, Plan
from orchestrator.report.progress import Estimator, Progress, estimate_text


def _meta(root: Path, key: str, stage: str, parent: str | None, seconds: float, params: dict | None = None) -> None:
    folder = root / "nodes" / key
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"key": key, "stage": stage, "parent": parent, "params": params or {},
                                                  "stage_seconds": seconds, "measure_seconds": 1.0}))


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    """Timings of two tasks: digits (prune 2 s and 4 s, + 1 s measuring each) and tinylm (prune 100 s)."""
    _meta(tmp_path, "d0", "baseline", None, 30.0, {"name": "digits"})
    _meta(tmp_path, "d1", "prune", "d0", 2.0)
    _meta(tmp_path, "d2", "prune", "d0", 4.0)
    _meta(tmp_path, "t0", "baseline", None, 200.0, {"name": "tinylm"})
    _meta(tmp_path, "t1", "prune", "t0", 100.0)
    (tmp_path / "nodes" / "broken").mkdir()  # a folder without meta (being written): ignored
    return tmp_path


def _node(key: str, stage: str, parent: str | None = "r") -> Node:
    return Node(key, stage, {}, parent, (stage,), (stage,))


def test_the_estimate_is_the_median_of_the_same_task_and_stage(cache_root: Path) -> None:
    est = Estimator(Cache(cache_root, sweep=False))
    assert est.seconds("digits", _node("x", "prune")) == pytest.approx(4.0)  # median of 3 s and 5 s
    assert est.seconds("tinylm", _node("x", "prune")) == pytest.approx(101.0)
    assert est.seconds("digits", _node("x", "quantize")) is None  # no history: not guessed
    known, unknown = est.total("digits", [_node("a", "prune"), _node("b", "prune"), _node("c", "quantize")])
    assert (known, unknown) == (pytest.approx(8.0), 1)
    assert estimate_text(known, unknown) == "~0m08s + 1 node without cached timings"
    assert estimate_text(0.0, 2).startswith("unknown")


def _result(seconds: float) -> SimpleNamespace:
    return SimpleNamespace(metrics={}, error=None, status="done", seconds=seconds, executed=True, target_errors={})


def test_on_a_terminal_rich_lists_the_running_nodes_done_total_and_time_left(cache_root: Path) -> None:
    plan = Plan({k: n for k, n in (("r", _node("r", "baseline", None)), ("p1234567xyz", _node("p1234567xyz", "prune")),
                                   ("q", _node("q", "prune")))})
    out = io.StringIO()
    console = Console(force_terminal=True, file=out, width=160)
    progress = Progress(plan, "digits", Estimator(Cache(cache_root, sweep=False)), cached=["r"], console=console)
    assert progress.live and progress.display is not None
    progress.started(plan.nodes["p1234567xyz"], "w1")
    assert progress.remaining() == "~0m08s"  # two prunes of ~4 s; the cached baseline costs nothing
    progress.display.refresh()
    screen = out.getvalue()
    assert "sweep digits" in screen and "0/3 nodes · 1 running" in screen and "left ~0m08s" in screen
    assert "prune: prune p1234567 on w1" in screen and "left ~0m04s" in screen  # the node's row, its own estimate
    progress.finished(plan.nodes["p1234567xyz"], _result(6.0))
    assert progress.estimator.seconds("digits", plan.nodes["q"]) == pytest.approx(5.0)  # learned from this sweep
    assert [t.description for t in progress.display.tasks] == ["sweep digits"]  # the finished node's row is gone
    progress.close()
    last = out.getvalue()[len(screen):]
    assert "[  1/3] prune: done in 6.0s" in last and "(left" not in last  # the live rows say what is left
    final = last.rstrip().split("\n")[-2]  # the display as it stays on screen (then the cursor comes back)
    assert "sweep digits" in final and "1/3 nodes · 0 running" in final and "left ~0m05s" in final
    assert "p1234567" not in last.split("done in 6.0s")[-1] and progress.display is None


def test_a_stream_that_is_no_terminal_gets_plain_lines(cache_root: Path) -> None:
    plan = Plan({"r": _node("r", "baseline", None)})
    out = io.StringIO()
    progress = Progress(plan, "digits", None, stream=out)  # StringIO: not a TTY, so no live display
    progress.started(plan.nodes["r"])
    progress.finished(plan.nodes["r"], _result(1.0))
    progress.close()
    assert not progress.live and out.getvalue() == ("[  1/1] baseline: running baseline \n"
                                                    "[  1/1] baseline: done in 1.0s \n")


def test_a_log_gets_event_lines_with_the_time_left(cache_root: Path) -> None:
    plan = Plan({"r": _node("r", "baseline", None), "p": _node("p", "prune")})
    out = io.StringIO()
    progress = Progress(plan, "digits", Estimator(Cache(cache_root, sweep=False)), stream=out, live=False)
    progress.started(plan.nodes["r"])
    progress.finished(plan.nodes["r"], SimpleNamespace(metrics={}, error=None, status="done", seconds=3.0,
                                                       executed=True, target_errors={}))
    assert out.getvalue().splitlines()[-1].endswith("(left ~0m04s)") and "\x1b" not in out.getvalue()


@pytest.mark.slow
def test_a_dry_run_estimates_the_new_nodes_from_an_earlier_sweep(pkdq_reference) -> None:
    store, _ = pkdq_reference  # the earlier sweep: its cache holds the baseline and prune timings (read only)
    dry = run_cli(store, "+recipe=pkdq", "orderings=[[prune]]", "sweep={}", "stages.prune.ratio=0.6", "dry_run=true")
    assert dry.returncode == 0 and "estimated compute of the 1 new nodes: ~" in dry.stdout, dry.stdout
