"""Shared fixtures: Hydra composition without a subprocess, the CLI in a subprocess, a tiny digits task."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests train small models in this process: one torch thread, like the digits task's default
# (Task.torch_threads); an oversubscribed thread pool trains several times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent

# Small enough to keep each CLI run to seconds; large enough that accuracy is meaningful.
FAST = ["eval.warmup=5", "eval.repeats=30"]
EPOCHS = ["task.epochs=6"]  # classification tasks; LM tasks train on token budgets
LM_TASKS = ("task=lm", "task=tinylm", "task=smollm2", "+recipe=ordering_study_llm", "+recipe=llm_deploy")
DIGITS_FAST = ["task.width=32", "task.hidden=128"]  # the default digits CNN at half width


def free_port() -> int:
    """A TCP port nothing listens on now (for the servers the tests start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compose(*overrides: str) -> dict[str, Any]:
    """The resolved config dict that `python -m orchestrator <overrides>` would see."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from orchestrator.config.schema import CONF_DIR, register, to_dict

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_dict(hydra_compose("config", overrides=list(overrides)))


@pytest.fixture
def store(tmp_path: Path) -> dict[str, str]:
    """A private cache dir and a private SQLite MLflow store under tmp_path."""
    return {"cache": str(tmp_path / "cache"), "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "artifacts": str(tmp_path / "artifacts")}


def cli_args(store: dict[str, str], *overrides: str) -> list[str]:
    """The command line of one CLI run against `store`."""
    return [sys.executable, "-m", "orchestrator", f"cache.dir={store['cache']}", f"tracking.uri={store['uri']}",
            f"tracking.artifact_root={store['artifacts']}", *FAST, *_task_fast(overrides), *overrides]


def _task_fast(overrides: tuple[str, ...]) -> list[str]:
    """Shorter baseline training: EPOCHS for classification tasks, plus DIGITS_FAST for digits."""
    if any(o in LM_TASKS for o in overrides):
        return []
    other = any(o.startswith("task=") and o != "task=digits" for o in overrides)
    return EPOCHS if other else [*EPOCHS, *DIGITS_FAST]


def run_cli(store: dict[str, str], *overrides: str, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m orchestrator` in a subprocess from the project root; returns the finished process."""
    env = {**(env or os.environ), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cli_args(store, *overrides), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def leaf_runs(store: dict[str, str], experiment: str) -> list[Any]:
    """The leaf node runs (`orchestrator.leaf = true`) of every sweep in `experiment` of the store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store["uri"])
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`orchestrator.leaf` = 'true'", max_results=1000)


@pytest.fixture(scope="session")
def digits() -> Any:
    """A digits task with a short baseline schedule."""
    from orchestrator.tasks.digits import Digits, DigitsParams

    return Digits(DigitsParams(epochs=6, width=32, hidden=128), seed=0)


@pytest.fixture(scope="session")
def baseline(digits: Any) -> Any:
    """The trained digits baseline (session-wide; copy it before mutating)."""
    return digits.build_baseline()
