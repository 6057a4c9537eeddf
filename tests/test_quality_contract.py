"""A third kind of task, defined here and nowhere else: regression scored by RMSE (lower is better).

It plugs in like a user's task (ORCHESTRATOR_PLUGINS names this module) and declares its quality once
(`Quality("rmse", ...)`, a loss as a ratio). The gate, the terminal table, the Markdown report, the MLflow
ratio metrics and the report rebuilt from MLflow alone then speak RMSE with no engine file knowing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.tasks.base import Task
from orchestrator.tasks.quality import RATIO, Quality

HERE = Path(__file__).resolve().parent


@dataclass
class DiabetesParams:
    """The MLP's width and its schedule."""

    name: str = "diabetes"
    hidden: int = 32
    epochs: int = 40


def mlp(hidden: int) -> Any:
    from torch import nn

    return nn.Sequential(nn.Linear(10, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))


class Diabetes(Task):
    """scikit-learn's diabetes table (442 rows, 10 features): the disease progression after a year."""

    name = "diabetes"
    Params = DiabetesParams
    libraries = ("torch", "scikit-learn")
    quality = Quality("rmse", False, RATIO, "rmse", "{:.4g}", collapse=1.5)

    @cached_property
    def _splits(self) -> dict[str, tuple[Any, Any]]:
        import torch
        from sklearn.datasets import load_diabetes

        x, y = load_diabetes(return_X_y=True)
        order = np.random.default_rng(self.seed).permutation(len(y))
        x = (x - x.mean(0)) / x.std(0)
        xs, ys = torch.tensor(x, dtype=torch.float32), torch.tensor(y / 100.0, dtype=torch.float32)
        train, test = order[:340], order[340:]
        return {"train": (xs[train], ys[train]), "test": (xs[test], ys[test]), "calib": (xs[train], ys[train])}

    def batches(self, split: str, batch_size: int, shuffle: bool = False) -> Iterator[tuple[Any, Any]]:
        x, y = self._splits[split]
        for start in range(0, len(y), batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]

    def build_baseline(self) -> Any:
        import torch

        from orchestrator.artifacts.training import fit

        def mse(out: Any, labels: Any, _inputs: Any) -> Any:
            return torch.nn.functional.mse_loss(out.squeeze(-1), labels)

        torch.manual_seed(self.seed)
        return fit(self, mlp(self.params.hidden), self.params.epochs, 0.01, 32, loss_fn=mse, seed=self.seed)

    def architecture(self, spec: dict[str, Any]) -> Any:
        return mlp(self.params.hidden)

    def protected_modules(self, model: Any) -> list:
        return [model[-1]]

    def score(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return {"rmse": float(np.sqrt(np.mean((logits.reshape(-1) - labels) ** 2)))}


def _env(tmp_path: Path) -> dict[str, str]:
    conf = tmp_path / "conf" / "task"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "diabetes.yaml").write_text("name: diabetes\nhidden: 32\nepochs: 40\n")
    return {**os.environ, "ORCHESTRATOR_PLUGINS": "test_quality_contract", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "ORCHESTRATOR_CONFIG_PATH": str(tmp_path / "conf")}


def test_a_regression_task_is_ranked_gated_and_logged_by_its_own_quality(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "orchestrator", "task=diabetes", "orderings=[[prune],[quantize]]",
           "stages.prune.ratio=0.8", "stages.quantize.mode=int8", "gate.max_loss=1.01",
           f"cache.dir={tmp_path / 'cache'}", f"tracking.uri={uri}", f"tracking.artifact_root={tmp_path / 'art'}",
           "eval.repeats=20", "eval.warmup=2", "eval.throughput_repeats=3", "tracking.log_models=false"]
    out = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    head = next(line for line in out.stdout.splitlines() if line.startswith("variant"))
    assert " rmse " in head and "x rmse" in head, head  # its metric and its loss as columns
    assert "rmse/latency front" in out.stdout
    # pruning 80% of an MLP without fine-tuning loses more than 1% of RMSE: the gate says so in RMSE
    assert "gated: rmse" in out.stdout and "more than gate.max_loss=1.01 (rmse ratio)" in out.stdout

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("adhoc")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.tags["orchestrator.quality.metric"] == "rmse"
    quantized = next(r for r in runs if r.data.tags.get("orchestrator.stage") == "quantize")
    m = quantized.data.metrics
    assert m["rmse_ratio"] == round(m["rmse"] / m["baseline/rmse"], 4)  # the MLflow ratio of its own loss
    report = Path(client.download_artifacts(parent.info.run_id, "report.md", str(tmp_path))).read_text()
    assert "rmse" in report and "accuracy" not in report

    # rebuilt from MLflow alone, without the plugin: the quality logged on the parent run is enough
    plain = {k: v for k, v in os.environ.items() if k != "ORCHESTRATOR_PLUGINS"}
    again = subprocess.run([sys.executable, "-m", "orchestrator.report", "adhoc", "--tracking-uri", uri,
                            "--out", str(tmp_path / "rebuilt")], cwd=tmp_path, env=plain, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "x rmse" in again.stdout and "rmse/latency front" in again.stdout


def test_a_bound_named_for_another_tasks_loss_is_refused(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "orchestrator", "task=diabetes", "pipeline=[quantize]",
           "report.max_accuracy_drop=0.01", "dry_run=true", f"cache.dir={tmp_path / 'cache'}"]
    out = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "report.max_accuracy_drop=0.01 is not allowed: task 'diabetes' measures rmse ratio" in out.stderr
    assert "report.max_loss" in out.stderr and "Traceback" not in out.stderr
