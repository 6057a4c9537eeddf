"""Search as a strategy of the planner's caller: Optuna proposes points of the space (an ordering and one value
per sweep axis), the same planner turns each into nodes of the one DAG, and the caller's executor computes
them, so a prefix another trial computed is a cache hit and a chain an earlier trial ran is answered from it.

A trial whose chain meets a failed node fails; one that meets a gated (or thereby skipped) node is pruned; the
rest are told the leaf's measured objectives. The study lives in Optuna's RDB storage under a name derived from
the recipe and its settings, so the same command run again continues it, and processes on several machines
given one storage (the team's PostgreSQL) share it: each trial carries its owner (host:pid) and a heartbeat,
so a trial whose process died (a dead pid on this host, or no heartbeat for GRACE_S) is closed as failed and
its point asked again, while another live process's trials are left alone and count against the budget.
Optuna is imported here only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.config.search import DIRECTIONS, Axis, SearchConfig, snap
from orchestrator.engine.executors.base import FAILED, NodeResult
from orchestrator.engine.plan import BASELINE, Keying, Plan, Variant
from orchestrator.engine.space import ORDERING, chain_label, check_space, merge, plan_point
from orchestrator.errors import ConfigError

TRIAL = "orchestrator.trial"  # the leaf run's tag (see orchestrator.tracking.tracker)
REDOES = "redoes"  # the user attr of a trial that asks again the point of one a killed process left running
OWNER, ALIVE = "owner", "alive"  # user attrs: the process computing a trial (host:pid), its last heartbeat
BEAT_S, GRACE_S = 20.0, 180.0  # a live process beats every BEAT_S; a trial silent for GRACE_S is stale


@dataclass
class Point:
    """One point of the space: a chain and a value per axis, and the trial that asked for it."""

    number: int
    chain: list[str]
    values: dict[str, Any]

    @property
    def params(self) -> dict[str, str]:
        """The sampled values as a run's params (`search.ordering`, `search.<axis>`)."""
        return {f"search.{ORDERING}": ">".join(self.chain) or BASELINE,
                **{f"search.{k}": str(v) for k, v in self.values.items()}}


def _primitive(values: tuple[Any, ...]) -> bool:
    return all(v is None or isinstance(v, (bool, int, float, str)) for v in values)


def _sampler(search: SearchConfig, seed: int) -> Any:
    import optuna

    kinds = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
             "random": optuna.samplers.RandomSampler}
    return kinds[search.sampler](seed=seed)


def _suggest(trial: Any, chains: list[list[str]], space: list[Axis]) -> Point:
    """Ask the trial for one point of the space."""
    labels = [chain_label(c) for c in chains]
    chain = chains[labels.index(trial.suggest_categorical(ORDERING, labels))]
    values: dict[str, Any] = {}
    for ax in space:
        if not ax.is_range:
            if _primitive(ax.choices):
                values[ax.key] = trial.suggest_categorical(ax.key, list(ax.choices))
            else:
                values[ax.key] = ax.choices[trial.suggest_categorical(ax.key, list(range(len(ax.choices))))]
        elif ax.integer:
            values[ax.key] = trial.suggest_int(ax.key, int(ax.low), int(ax.high), step=int(ax.step or 1),
                                               log=ax.log)
        else:
            values[ax.key] = snap(trial.suggest_float(ax.key, float(ax.low), float(ax.high), step=ax.step,
                                                      log=ax.log))
    return Point(trial.number, chain, values)


class Search:
    """One invocation's share of a study: replay its completed trials, then ask and tell within the budget.

    `run_plan(plan)` computes a plan's nodes (the caller's executor; results land in `results`, the first
    result of a node kept); `on_trial(leaf, point)` is told which leaf answers which trial before it runs.
    """

    def __init__(self, cfg: dict[str, Any], search: SearchConfig, registry: dict[str, type],
                 tasks: dict[str, type], pinned: frozenset[str], keying: Keying | None,
                 objectives: list[tuple[str, str]]) -> None:
        self.cfg, self.search, self.registry, self.tasks = cfg, search, registry, tasks
        self.pinned, self.keying, self.objectives = pinned, keying, objectives
        self.chains, self.space = check_space(cfg, pinned, registry)
        self.plan = Plan()  # every trial's nodes and leaves: what the report and the run view read
        self.say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)

    def open(self, storage: str, name: str) -> Any:
        """The study (created, or loaded to continue)."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        seed = self.search.seed if self.search.seed is not None else int(self.cfg.get("seed", 0))
        study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                    sampler=_sampler(self.search, seed), directions=[d for _, d in self.objectives])
        asked = len(study.get_trials(deepcopy=False))
        if asked:  # a continued study: a sampler seeded as before would draw its first points again
            study.sampler = _sampler(self.search, seed + asked)
        return study

    def run(self, study: Any, run_plan: Callable[[Plan], None], results: dict[str, NodeResult],
            on_trial: Callable[[str, Point], None]) -> None:
        """Replay the study's completed trials from the cache, then run new ones until the budget is spent."""
        from optuna.trial import TrialState

        self._close_stale(study)
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if done:
            self.say(f"search: continuing study {study.study_name}: {len(done)} completed trials, from the cache")
            points = [Point(t.number, t.user_attrs["chain"], t.user_attrs["values"]) for t in done]
            self._batch(points, run_plan, results, on_trial)
        budget = self.search.trials or None
        deadline = time.monotonic() + 60 * self.search.timeout_minutes if self.search.timeout_minutes else None
        with _Heartbeat() as heart:
            while deadline is None or time.monotonic() < deadline:
                self._close_stale(study)
                finished, running = _spent(study)
                room = self.search.parallel if budget is None else min(self.search.parallel,
                                                                       budget - finished - running)
                if room <= 0:
                    break
                trials = [study.ask() for _ in range(room)]
                points = [_suggest(t, self.chains, self.space) for t in trials]
                for t, p in zip(trials, points, strict=True):
                    for key, value in ((OWNER, _ME), (ALIVE, time.time()), ("chain", p.chain), ("values", p.values)):
                        t.set_user_attr(key, value)
                    heart.trials[t.number] = t
                leaves = self._batch(points, run_plan, results, on_trial)
                for trial, point, leaf in zip(trials, points, leaves, strict=True):
                    heart.trials.pop(trial.number, None)
                    self._tell(study, trial, point, leaf, results, budget)

    def _close_stale(self, study: Any) -> None:
        """Close the trials a dead process left running (failed), asking their points again."""
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not _stale(t):
                continue
            with contextlib.suppress(Exception):  # another process may close it first: once is enough
                study.tell(t.number, state=TrialState.FAIL)
                if t.params:  # its point is asked again (from the cache where its nodes were computed)
                    study.enqueue_trial(t.params, user_attrs={REDOES: t.number})
                self.say(f"search: trial #{t.number} was left running by a process that is gone "
                         f"({t.user_attrs.get(OWNER, 'unknown')}): closed as failed"
                         + (", its point asked again" if t.params else ""))

    def _batch(self, points: list[Point], run_plan: Callable[[Plan], None], results: dict[str, NodeResult],
               on_trial: Callable[[str, Point], None]) -> list[str | None]:
        """Plan the points and compute what this invocation has not yet; each point's leaf (None: refused)."""
        batch, leaves = Plan(), []
        for p in points:
            try:
                one = plan_point(self.cfg, p.chain, p.values, self.registry, self.tasks, self.pinned, self.keying)
            except ConfigError as err:  # a value the probe did not reach (inside a range): this trial fails
                self.say(f"trial {p.number}: {chain_label(p.chain)} {p.values} refused: {err}")
                leaves.append(None)
                continue
            variant: Variant = one.variants[0]
            leaves.append(variant.leaf)
            on_trial(variant.leaf, p)
            merge(self.plan, one)
            if not self._blocked(one, variant.leaf, results):
                merge(batch, one)
        if batch.nodes:
            run_plan(batch)
        return leaves

    def _blocked(self, one: Plan, leaf: str, results: dict[str, NodeResult]) -> bool:
        """Whether the chain is answered already: its leaf, or a node on it that stops it, has a result."""
        from orchestrator.engine.executors.base import BLOCKING

        return leaf in results or any(results[n.key].status in BLOCKING for n in one.ancestors(leaf)
                                      if n.key in results)

    def _tell(self, study: Any, trial: Any, point: Point, leaf: str | None, results: dict[str, NodeResult],
              budget: int | None) -> None:
        """Tell Optuna how the trial ended, and say it on the progress stream."""
        from optuna.trial import TrialState

        chain = [self.plan.nodes[n.key] for n in self.plan.ancestors(leaf)] if leaf else []
        stopped = next((results[n.key] for n in chain if n.key in results and results[n.key].status != "done"
                        and results[n.key].status != "cached"), None)
        if leaf is None or stopped is not None and stopped.status == FAILED:
            study.tell(trial, state=TrialState.FAIL)
            how = "failed"
        elif stopped is not None:
            study.tell(trial, state=TrialState.PRUNED)
            how = f"pruned ({stopped.status} at {stopped.key[:10]})"
        else:
            metrics = results[leaf].metrics
            missing = [m for m, _ in self.objectives if m not in metrics]
            if missing:
                study.tell(trial, state=TrialState.FAIL)
                how = f"failed: the leaf has no {', '.join(missing)}"
            else:
                study.tell(trial, [float(metrics[m]) for m, _ in self.objectives])
                how = " ".join(f"{m}={metrics[m]:.4g}" for m, _ in self.objectives)
        label = next((v.label for v in self.plan.variants if v.leaf == leaf), chain_label(point.chain))
        count = _spent(study)[0]
        self.say(f"trial {count}/{budget or '∞'} (#{point.number}) {label}: {how}; {self._best(study)}")

    def _best(self, study: Any) -> str:
        """The best so far: the best value of the first objective and, with several, the Pareto front's size."""
        from optuna.trial import TrialState

        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return "best so far: none"
        metric, direction = self.objectives[0]
        pick = max if direction == "maximize" else min
        best = f"best so far: {metric}={pick(t.values[0] for t in done):.4g}"
        return best if len(self.objectives) == 1 else f"{best}, Pareto front of {len(study.best_trials)}"


_ME = f"{socket.gethostname()}:{os.getpid()}"


def _spent(study: Any) -> tuple[int, int]:
    """(finished trials, trials running in other live processes) of the budget; a trial that was redone
    after its process died counts once, as its redo."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    redone = {t.user_attrs[REDOES] for t in trials if REDOES in t.user_attrs}
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
                   and t.number not in redone for t in trials)
    return finished, sum(t.state == TrialState.RUNNING for t in trials)


def _stale(trial: Any) -> bool:
    """Whether a running trial's process is gone: a dead pid on this host, else no heartbeat for GRACE_S."""
    host, _, pid = str(trial.user_attrs.get(OWNER, "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False
    last = trial.user_attrs.get(ALIVE) or (trial.datetime_start.timestamp() if trial.datetime_start else 0.0)
    return time.time() - float(last) > GRACE_S


class _Heartbeat:
    """A thread that stamps this process's running trials every BEAT_S, so other processes sharing the
    study see them alive (a node may compute for many minutes)."""

    def __init__(self) -> None:
        self.trials: dict[int, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="search-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_S):
            for trial in list(self.trials.values()):
                with contextlib.suppress(Exception):  # a busy database: the next beat will do
                    trial.set_user_attr(ALIVE, time.time())


def objectives(search: SearchConfig, quality: Any) -> list[tuple[str, str]]:
    """(metric, direction) per objective with `quality` read as the task's own metric and direction."""
    out = []
    for metric, direction in search.metrics:
        if metric == "quality":
            metric = quality.metric
            own = "maximize" if quality.higher_is_better else "minimize"
            direction = direction if direction in DIRECTIONS else own
        out.append((metric, str(direction)))
    return out
