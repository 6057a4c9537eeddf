"""A task defined outside the package: scikit-learn's wine table (13 features, 3 classes) and a small MLP.

Use it without editing the project (see the README, "Plug in your own model and dataset"):

    ORCHESTRATOR_PLUGINS=wine_task PYTHONPATH=examples ORCHESTRATOR_CONFIG_PATH=examples/conf \\
        python -m orchestrator +recipe=pkdq task=wine

or install it as a distribution with an entry point (`[project.entry-points."orchestrator.tasks"]
wine = "wine_task:Wine"`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from orchestrator.errors import check_range
from orchestrator.tasks.base import Task


@dataclass
class WineParams:
    """The MLP's width and its training schedule."""

    name: str = "wine"
    hidden: int = 64
    epochs: int = 60
    lr: float = 0.01
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_range("hidden", self.hidden, 2, 4096)
        check_range("epochs", self.epochs, 0, 10000)
        check_range("lr", self.lr, 0, 1, lo_open=True)
        check_range("batch_size", self.batch_size, 1, 4096)


def mlp(hidden: int) -> Any:
    from torch import nn

    return nn.Sequential(nn.Linear(13, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3))


class Wine(Task):
    """178 wines, standardised features, a seeded stratified 70/30 split."""

    name = "wine"
    version = "1"
    Params = WineParams
    libraries = ("torch", "scikit-learn")

    @cached_property
    def _splits(self) -> dict[str, tuple[Any, Any]]:
        import torch
        from sklearn.datasets import load_wine
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler

        x, y = load_wine(return_X_y=True)
        tr, te = train_test_split(range(len(y)), test_size=0.3, random_state=self.seed, stratify=y)
        scaler = StandardScaler().fit(x[tr])
        xs = torch.tensor(scaler.transform(x), dtype=torch.float32)
        yt = torch.tensor(y, dtype=torch.long)
        return {"train": (xs[tr], yt[tr]), "test": (xs[te], yt[te]), "calib": (xs[tr], yt[tr])}

    def batches(self, split: str, batch_size: int, shuffle: bool = False) -> Iterator[tuple[Any, Any]]:
        import torch

        x, y = self._splits[split]
        order = torch.randperm(len(y)) if shuffle else torch.arange(len(y))
        for start in range(0, len(y), batch_size):
            sel = order[start:start + batch_size]
            yield x[sel], y[sel]

    def build_baseline(self) -> Any:
        import torch

        from orchestrator.artifacts.training import fit

        torch.manual_seed(self.seed)
        return fit(self, mlp(self.params.hidden), self.params.epochs, self.params.lr, self.params.batch_size,
                   seed=self.seed)

    def architecture(self, spec: dict[str, Any]) -> Any:
        return mlp(self.params.hidden)

    def protected_modules(self, model: Any) -> list:
        return [model[-1]]
