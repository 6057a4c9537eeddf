"""Quality metrics through `evaluate` metric modules shipped in this package.

`evaluate.load("accuracy")` needs the Hugging Face hub; these modules are loaded by their folder path,
so scoring works offline (HF_HUB_OFFLINE=1) and the metric code is versioned with ours.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

METRICS_DIR = Path(__file__).resolve().parent


@functools.cache
def load(name: str) -> Any:
    """The `evaluate` module `name` (a folder of this package), loaded once per process."""
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))


def classification(predictions: np.ndarray, labels: np.ndarray, num_labels: int | None = None) -> dict[str, float]:
    """`accuracy` and macro `f1` of class-id predictions (over classes 0..num_labels-1 when given, so a
    class that is never predicted still counts in the macro average).

    Macro F1 is computed always for classification, not only when classes are imbalanced: it is cheap,
    sits close to accuracy on balanced data, and a fixed metric set keeps runs comparable across datasets.
    """
    preds, refs = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
    return {**load("accuracy").compute(predictions=preds, references=refs),
            **load("f1").compute(predictions=preds, references=refs, average="macro",
                                 labels=None if num_labels is None else list(range(num_labels)))}


def agreement(predictions: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of predictions equal to a reference model's predictions (top-1 agreement)."""
    return float(load("accuracy").compute(predictions=np.asarray(predictions).ravel(),
                                          references=np.asarray(reference).ravel())["accuracy"])
