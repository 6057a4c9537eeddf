"""search.strategy=optuna: trials are chains of the one DAG and cache, the study resumes, bad settings refuse."""

from __future__ import annotations

import re
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
    more = run_cli(store, *SEARCH, "search.trials=5")  # within the budget: the stale trial is closed, its point redone
    assert more.returncode == 0, more.stdout[-2000:] + more.stderr[-3000:]
    assert f"trial #{stale.number} was left running" in more.stderr
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
    assert "as a grid: 12 points" in out.stdout and "budget: 4 trials" in out.stdout


def test_search_on_the_pool_with_trials_in_flight(store: dict[str, str]) -> None:
    out = run_cli(store, *SEARCH, "executor=pool", "executor.workers=2", "search.parallel=2")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    nodes, executed = _counts(out.stdout)
    assert executed == nodes
    assert "trial 4/4" in out.stderr
