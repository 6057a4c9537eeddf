"""A sweep's search strategy end to end: where its study lives, the check that the storage opens before any
compute, the trials run through the sweep's own executor, and the account on the parent run (search.md, the
plots of the front over trials and of parameter importance)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.config.settings import Settings
from orchestrator.engine import search, study
from orchestrator.engine.executors.base import NodeResult
from orchestrator.engine.plan import Keying, Plan
from orchestrator.errors import ConfigError


def study_of(settings: Settings, pinned: frozenset[str]) -> tuple[str, str]:
    """(storage URL, name) of the search's study."""
    t = settings.tracking
    return (study.storage_url(t.uri, t.enabled, settings.cache.dir, settings.search.storage),
            study.study_name(settings.title, dict(settings.data), settings.search, pinned))


def check_storage(settings: Settings, pinned: frozenset[str]) -> None:
    """Open the study's storage once (creating its tables), so an unreachable or refused database is one line
    naming `search.storage`, exit 2, before the baseline is trained."""
    import optuna

    url = study_of(settings, pinned)[0]
    for attempt in range(3):  # two processes creating the tables of a new database at once: one loses a race
        try:
            optuna.storages.RDBStorage(url)
            return
        except Exception as err:  # SQLAlchemy's and the drivers' errors have no common base worth naming
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            time.sleep(1.0 + attempt)
    raise ConfigError("search.storage", _safe(url), f"the study's database did not open ({first})")


def _safe(url: str) -> str:
    """The URL with its password hidden."""
    head, at, tail = url.partition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, user = head.rpartition("//")
    return f"{scheme}//{user.split(':')[0]}:***@{tail}"


def run(settings: Settings, the_plan: Plan, keying: Keying, pinned: frozenset[str],
        run_plan: Callable[[Plan], None], results: dict[str, NodeResult], tracker: Any) -> None:
    """Run the search's trials through `run_plan` (the grid's executor); `the_plan` gathers their nodes."""
    from orchestrator.report.search_plots import write_search_plots
    from orchestrator.stages import REGISTRY
    from orchestrator.tasks import TASKS

    objectives = search.objectives(settings.search, TASKS[settings.task].quality)
    driver = search.Search(dict(settings.data), settings.search, REGISTRY, TASKS, pinned, keying, objectives)
    driver.plan = the_plan
    the_study = driver.open(*study_of(settings, pinned))

    def on_trial(leaf: str, point: search.Point) -> None:
        if tracker:
            tracker.trials.setdefault(leaf, (point.number, point.params))

    driver.run(the_study, run_plan, results, on_trial)
    if tracker:  # the trials, the front over them and what mattered, on the parent run
        importance = study.importances(the_study)
        with tempfile.TemporaryDirectory() as tmp:
            images = write_search_plots(study.trials(the_study), objectives, importance, Path(tmp),
                                        f"{settings.title}: study {the_study.study_name}")
            tracker.log_report({}, {"search.md": study.summary(the_study, objectives)}, images, {}, {})
