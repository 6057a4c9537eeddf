"""`digits`: scikit-learn's bundled 8x8 handwritten digits and a small CNN. Needs no network, trains in seconds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from orchestrator.errors import check_range
from orchestrator.tasks.base import Task


@dataclass
class DigitsParams:
    """Baseline training settings for the digits CNN."""

    name: str = "digits"
    width: int = 64  # channels of the first conv; the second has 2x
    hidden: int = 256
    epochs: int = 15
    lr: float = 2e-3
    batch_size: int = 64
    test_fraction: float = 0.25
    calib_size: int = 256

    def __post_init__(self) -> None:
        check_range("width", self.width, 1, 1024)
        check_range("hidden", self.hidden, 1, 8192)
        check_range("epochs", self.epochs, 0, 1000)
        check_range("lr", self.lr, 0, 1, lo_open=True)
        check_range("batch_size", self.batch_size, 1, 65536)
        check_range("test_fraction", self.test_fraction, 0, 1, lo_open=True, hi_open=True)
        check_range("calib_size", self.calib_size, 1, 10000)


def build_cnn(width: int, hidden: int) -> Any:
    """conv-relu-conv-relu-pool-fc-relu-fc on 1x8x8 inputs, 10 classes."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(2 * width * 16, hidden), nn.ReLU(),
        nn.Linear(hidden, 10),
    )


class Digits(Task):
    """8x8 digits (1797 images, 10 classes), stratified seeded train/test split."""

    name = "digits"
    version = "1"
    Params = DigitsParams
    libraries = ("torch", "scikit-learn", "numpy")  # the images ship inside scikit-learn
    # one torch thread unless executor.torch_threads says otherwise: this CNN's ops are too small to split, and
    # its baseline trained in 22-32 s on 1 thread against 86-131 s on 2 (2-core AMD EPYC, machine shared)
    torch_threads = 1
    # every image is in train or test: stages tune on the calibration images (training examples), never on test;
    # a model fits those better than unseen ones, so losses measured there understate the test losses
    validation_split = "calib"

    @cached_property
    def _splits(self) -> dict[str, tuple[Any, Any]]:
        import torch
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        data = load_digits()
        x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
        y = torch.tensor(data.target, dtype=torch.long)
        idx_train, idx_test = train_test_split(
            range(len(y)), test_size=self.params.test_fraction, random_state=self.seed, stratify=data.target)
        train, test = (x[idx_train], y[idx_train]), (x[idx_test], y[idx_test])
        calib = (train[0][: self.params.calib_size], train[1][: self.params.calib_size])
        return {"train": train, "test": test, "calib": calib}

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
        model = build_cnn(self.params.width, self.params.hidden)
        return fit(self, model, self.params.epochs, self.params.lr, self.params.batch_size, seed=self.seed)

    def architecture(self, spec: dict[str, Any]) -> Any:
        """The CNN at this task's width (pruned shapes are restored by the loader)."""
        return build_cnn(self.params.width, self.params.hidden)

    def protected_modules(self, model: Any) -> list:
        return [model[-1]]  # the 10-way classifier keeps its outputs
