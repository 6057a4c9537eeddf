"""search.strategy=optuna: trials are chains of the one DAG and cache, the study resumes, bad settings refuse."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import leaf_runs, run_cli

SPACE = ("task=digits", "orderings=[[prune,quantize],[quantize]]",
         "++sweep={stages.prune.ratio: {low: 0.2, high: 0.6, step: 0.2}, stages.quantize.mode: [int8, fp16]}")
SEARCH = (*SPACE, "search.strategy=optuna", "search.trials=4", "search.sampler=random", "search.seed=0",
          "tracking.log_models=false")


def _counts(stdout: str) -> tuple[int, int]:
    """(unique nodes, stage executions) from the summary line."""
    found = re.search(r"(\d+) unique nodes: (\d+) stage executions", stdout)
    assert found, stdout[-2000:]
    return int(found[1]), int(found[2])


def _study(store: dict[str, str]) -> object:
    import optuna

    storage = f"sqlite:///{Path(store['uri'].removeprefix('sqlite:///')).parent / 'search.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped (so nothing answers at it)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return proc.pid
    pytest.skip("the pid of an exited process was reused at once")


def test_search_end_to_end_then_resumes(store: dict[str, str]) -> None:
    out = run_cli(store, *SEARCH)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "Recommended:" in out.stdout
    assert "trial 4/4" in out.stderr
    last = [line for line in out.stderr.splitlines() if line.startswith("trial 4/4")][-1]
    assert re.search(r"best so far: accuracy=[0-9.]+, Pareto front of [1-4]$", last), last
    nodes, executed = _counts(out.stdout)
    assert executed == nodes  # no node computed twice, shared prefixes included
    runs = leaf_runs(store, "adhoc")
    trials = {r.data.tags["orchestrator.trial"] for r in runs if "orchestrator.trial" in r.data.tags}
    assert trials and trials <= {"0", "1", "2", "3"}
    assert all("search.ordering" in r.data.params for r in runs if "orchestrator.trial" in r.data.tags)
    assert any("| 3 | complete |" in p.read_text() for p in Path(store["artifacts"]).rglob("search.md"))
    assert list(Path(store["artifacts"]).rglob("search.png"))  # the front over trials, on the parent run

    again = run_cli(store, *SEARCH)  # the same command: the study continues, its trials answered from the cache
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "continuing study" in again.stderr
    assert _counts(again.stdout)[1] == 0
    from optuna.trial import TrialState

    numbers = [t.number for t in _study(store).get_trials() if t.state == TrialState.COMPLETE]
    assert sorted(numbers) == [0, 1, 2, 3]

    study = _study(store)  # a process killed mid-trial leaves it RUNNING: here one at trial 3's point
    last = study.trials[3]
    study.enqueue_trial(last.params)
    stale = study.ask(fixed_distributions=last.distributions)
    assert stale.params == last.params
    stale.set_user_attr("owner", f"{socket.gethostname()}:{_dead_pid()}")  # as a killed process leaves it
    more = run_cli(store, *SEARCH, "search.trials=5")  # within the budget: the stale trial is closed, its point redone
    assert more.returncode == 0, more.stdout[-2000:] + more.stderr[-3000:]
    assert f"trial #{stale.number} was left running by a process that is gone" in more.stderr
    assert _counts(more.stdout)[1] == 0  # from the cache
    trials = _study(store).get_trials()
    assert trials[stale.number].state == TrialState.FAIL
    redo = [t for t in trials if t.user_attrs.get("redoes") == stale.number]
    assert len(redo) == 1 and redo[0].state == TrialState.COMPLETE and redo[0].params == last.params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5


@pytest.mark.parametrize(("setting", "key"), [
    (("search.sampler=grid_of_doom",), "search.sampler"),
    (("search.trials=0",), "search.trials"),
    (("search.objectives=[{browser_latency_p50_ms: minimize}]",), "search.objectives[0]"),
    (("++sweep={stages.prune.ratio: {low: 0.6, high: 0.2}}",), "sweep.stages.prune.ratio.low"),
    (("++sweep={stages.quantize.mode: []}",), "sweep.stages.quantize.mode"),
    (("search.storage=redis://localhost/0",), "search.storage"),
    (("search.storage=postgresql+psycopg://nobody@127.0.0.1:9/optuna",), "search.storage"),  # nothing listens
    (("orderings=[[quantize]]", "++sweep={stages.quantize.mode: [int8]}"), "search.strategy"),
])
def test_bad_search_settings_exit_2_naming_the_key(store: dict[str, str], setting: tuple[str, ...],
                                                   key: str) -> None:
    out = run_cli(store, *SEARCH, *setting)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"error: {key}=" in out.stderr, out.stderr[-2000:]
    assert not Path(store["cache"]).exists() or not any(Path(store["cache"]).glob("*/*/meta.json"))


def test_grid_refuses_a_range_it_cannot_enumerate(store: dict[str, str]) -> None:
    out = run_cli(store, "task=digits", "pipeline=[prune]", "++sweep={stages.prune.ratio: {low: 0.2, high: 0.6}}",
                  "dry_run=true")
    assert out.returncode == 2
    assert "error: sweep.stages.prune.ratio=" in out.stderr and "step" in out.stderr


def test_dry_run_prints_the_space_and_budget(store: dict[str, str]) -> None:
    out = run_cli(store, *SEARCH, "dry_run=true")
    assert out.returncode == 0, out.stderr[-2000:]
    # [prune, quantize] x 3 ratios x 2 modes + [quantize] x 2 modes: a ratio cannot change the [quantize] chain
    assert "as a grid: 8 points" in out.stdout and "budget: 4 trials" in out.stdout


def test_search_on_the_pool_with_trials_in_flight(store: dict[str, str]) -> None:
    out = run_cli(store, *SEARCH, "executor=pool", "executor.workers=2", "search.parallel=2")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    nodes, executed = _counts(out.stdout)
    assert executed == nodes
    assert "trial 4/4" in out.stderr


def test_pareto_of_trials_respects_each_direction() -> None:
    from orchestrator.report.search_plots import pareto

    points = [(0, [0.9, 5.0]), (1, [0.8, 2.0]), (2, [0.7, 3.0]), (3, [0.9, 6.0])]  # accuracy up, latency down
    assert pareto(points, ["maximize", "minimize"]) == {0, 1}


def test_grid_size_counts_only_the_axes_a_chain_uses() -> None:
    from orchestrator.config.search import axis, grid_size

    ratio, mode = axis("stages.prune.ratio", [0.3, 0.5, 0.7]), axis("stages.quantize.mode", ["int8", "fp16"])
    assert grid_size([[ratio, mode], [mode]]) == 8
    assert grid_size([[axis("stages.prune.ratio", {"low": 0.1, "high": 0.7})]]) is None


def _run_and_kill(store: dict[str, str], after: str, *overrides: str) -> str:
    """Start the CLI, and SIGKILL it at the first progress line after a stderr line starting with `after`
    (a node starting or a trial ending: mid-trial); returns its stderr up to then."""
    import signal

    from conftest import ROOT, cli_args

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cli_args(store, *overrides), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen, armed = [], False
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if armed and (": running " in line or line.startswith("trial ")):
            break
        armed = armed or line.startswith(after)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(60)
    assert armed, "".join(seen)[-3000:]  # it was killed mid-search, not after it finished
    return "".join(seen)


def test_a_search_killed_twice_resumes_with_each_trial_once_and_no_node_twice(store: dict[str, str]) -> None:
    from optuna.trial import TrialState

    budget = ("search.trials=6",)
    first = _run_and_kill(store, "trial 1/", *SEARCH, *budget)
    second = _run_and_kill(store, "trial 3/", *SEARCH, *budget)
    last = run_cli(store, *SEARCH, *budget)
    assert last.returncode == 0, last.stdout[-2000:] + last.stderr[-3000:]
    assert "was left running by a process that is gone" in second + last.stderr
    trials = _study(store).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6  # the budget, each trial once
    stale = [t for t in trials if t.state == TrialState.FAIL]
    for t in stale:  # each trial a killed process left running was asked again exactly once
        assert sum(u.user_attrs.get("redoes") == t.number for u in trials) == 1
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # no node computed twice: the nodes that finished computing in the three runs are the cache's nodes
    computed = sum(len(re.findall(r"^\[\s*\d+/\d+\] \S+: done in ", text, re.M))
                   for text in (first, second, last.stderr))
    assert computed == len(list(Path(store["cache"]).glob("*/*/meta.json")))
