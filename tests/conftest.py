"""Shared fixtures: Hydra composition without a subprocess, the CLI in a subprocess, a tiny digits task,
and one reference `pkdq` sweep for the whole session."""

from __future__ import annotations

import os
import shutil
import sqlite3
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


def require_llamacpp() -> Any:
    """orchestrator.artifacts.llamacpp, or skip the calling module saying how to install the runtime (the README's
    test command installs it: a missing one is said, never passed silently)."""
    llamacpp = pytest.importorskip("orchestrator.artifacts.llamacpp")
    try:
        llamacpp.lib_path()
    except llamacpp.RuntimeMissing as err:
        pytest.skip(str(err), allow_module_level=True)
    return llamacpp


def benchmark(name: str) -> Any:
    """The script benchmarks/NAME.py loaded as a module (benchmarks is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


# The session's reference sweep: the default pkdq recipe, its pick registered, an accuracy constraint (so the
# report's constraint path runs) and a short throughput measurement. Tests that compare against it run the same.
REFERENCE = ("+recipe=pkdq", "report.register=digits-pick", "report.max_accuracy_drop=0.03",
             "eval.throughput_repeats=5")


def store_at(root: Path) -> dict[str, str]:
    """A cache dir, a SQLite MLflow store and an artifact folder under `root`."""
    return {"cache": str(root / "cache"), "uri": f"sqlite:///{root / 'mlflow.db'}", "artifacts": str(root / "art")}


@pytest.fixture(scope="session")
def pkdq_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], subprocess.CompletedProcess]:
    """(store, finished CLI process) of one REFERENCE sweep, run once per session. Read it, never write to it.

    Several modules check a finished pkdq sweep (its MLflow runs, the report, the registry, the cache); each
    used to run its own. A test that must write (a rerun, another experiment, planted files) takes
    `copy_store` of it; a test whose point is a fresh store (executed vs cached counts, kills) runs its own.
    """
    store = store_at(tmp_path_factory.mktemp("pkdq-reference"))
    out = run_cli(store, *REFERENCE)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return store, out


def copy_store(store: dict[str, str], root: Path) -> dict[str, str]:
    """A private, writable copy of `store` under `root`: the cache, the MLflow database and its artifacts.

    MLflow records absolute artifact locations, so the copy's database is rewritten to point at the copied
    artifacts: a run logged into the copy never writes into the original.
    """
    old = Path(store["uri"].removeprefix("sqlite:///")).parent
    shutil.copytree(old, root, dirs_exist_ok=True)
    copy = store_at(root)
    with sqlite3.connect(root / "mlflow.db") as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for column in db.execute(f"PRAGMA table_info('{table}')").fetchall():
                if column[2].upper().startswith(("VARCHAR", "TEXT")):
                    db.execute(f'UPDATE "{table}" SET "{column[1]}" = REPLACE("{column[1]}", ?, ?)',
                               (str(old), str(root)))
    return copy
