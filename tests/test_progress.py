"""Progress: estimates from the cache's own timings, the live status line, the dry run's estimate."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_cli

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


def test_the_live_status_shows_running_stages_and_what_is_left(cache_root: Path) -> None:
    plan = Plan({k: n for k, n in (("r", _node("r", "baseline", None)), ("p", _node("p", "prune")),
                                   ("q", _node("q", "prune")))})
    out = io.StringIO()
    progress = Progress(plan, "digits", Estimator(Cache(cache_root, sweep=False)), cached=["r"], stream=out, live=True)
    progress.started(plan.nodes["p"])
    status = progress.status()
    assert status.startswith("0/3 done · running: prune (prune, 0m0") and "· 2 queued ·" in status
    assert status.endswith("left ~0m08s")  # two prunes of ~4 s; the cached baseline costs nothing
    progress.finished(plan.nodes["p"], SimpleNamespace(metrics={}, error=None, status="done", seconds=6.0,
                                                       executed=True, target_errors={}))
    assert progress.estimator.seconds("digits", plan.nodes["q"]) == pytest.approx(5.0)  # learned from this sweep
    progress.close()
    text = out.getvalue()
    assert "\r\x1b[K" in text and "[  1/3] prune: done in 6.0s" in text and text.endswith("\n")


def test_a_log_gets_event_lines_with_the_time_left(cache_root: Path) -> None:
    plan = Plan({"r": _node("r", "baseline", None), "p": _node("p", "prune")})
    out = io.StringIO()
    progress = Progress(plan, "digits", Estimator(Cache(cache_root, sweep=False)), stream=out, live=False)
    progress.started(plan.nodes["r"])
    progress.finished(plan.nodes["r"], SimpleNamespace(metrics={}, error=None, status="done", seconds=3.0,
                                                       executed=True, target_errors={}))
    assert out.getvalue().splitlines()[-1].endswith("(left ~0m04s)") and "\x1b" not in out.getvalue()


@pytest.mark.slow
def test_a_dry_run_estimates_the_new_nodes_from_an_earlier_sweep(store: dict[str, str]) -> None:
    first = run_cli(store, "+recipe=pkdq", "orderings=[[prune]]", "sweep={}", "tracking.log_models=false")
    assert first.returncode == 0, first.stderr[-2000:]
    dry = run_cli(store, "+recipe=pkdq", "orderings=[[prune]]", "sweep={}", "stages.prune.ratio=0.6", "dry_run=true")
    assert dry.returncode == 0 and "estimated compute of the 1 new nodes: ~" in dry.stdout, dry.stdout
