"""The `hf` task's settings (`task.*`): model, data, splits and the baseline fine-tune, checked on creation."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.errors import ConfigError, check_choice, check_range
from orchestrator.tasks.hf.data import check_source
from orchestrator.tasks.hf.precision import DTYPES, resolve


@dataclass
class HFParams:
    """Model, data, splits and the baseline fine-tune.

    Splits: `train_split` / `val_split` / `test_split` name the data's splits; a missing val or test
    split is carved out of train with a seeded permutation (test: `test_size` rows, else a fifth).
    `*_size` > 0 keeps a seeded random subset of that many rows. `labels` fixes the class order
    (default: sorted distinct training labels). Texts are truncated to `max_length` tokens.
    `train_dtype: bfloat16` runs training forward passes under CPU autocast (weights stay float32;
    2-3x faster on CPUs with AVX512-BF16/AMX, slower without); `auto` picks it where the CPU has them
    (see tasks/hf/precision); evaluation is always float32.
    """

    name: str = "hf"
    model: str = ""
    dataset: str = ""
    text_column: str = "text"
    label_column: str = "label"
    labels: list = field(default_factory=list)
    encoding: str = "utf-8"
    train_split: str = "train"
    val_split: str = "validation"
    test_split: str = "test"
    train_size: int = 0
    val_size: int = 0
    test_size: int = 0
    drop_duplicates: bool = False
    max_length: int = 64
    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 32
    calib_size: int = 256
    train_dtype: str = "auto"

    def __post_init__(self) -> None:
        self.check_sources()
        check_choice("train_dtype", self.train_dtype, DTYPES)
        self.train_dtype = resolve(self.train_dtype)  # before the baseline is keyed: the key names what trains
        check_range("max_length", self.max_length, 2, 8192)
        check_range("epochs", self.epochs, 0, 1000)
        check_range("lr", self.lr, 0, 1, lo_open=True)
        check_range("batch_size", self.batch_size, 1, 65536)
        check_range("calib_size", self.calib_size, 1, 1000000)
        for key in ("train_size", "val_size", "test_size"):
            check_range(key, getattr(self, key), 0, 10**9)
        if not isinstance(self.labels, list):
            raise ConfigError("labels", self.labels, "must be a list of class names (or empty)")

    def check_sources(self) -> None:
        """Local paths must exist; hub ids are refused when offline (fail before any compute)."""
        check_source("model", self.model, "model directory")
        check_source("dataset", self.dataset, "data file or folder")
