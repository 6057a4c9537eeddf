"""Offline `f1` metric module for `evaluate.load(<this folder>)` (the hub's copy needs the network)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "F1: the harmonic mean of precision and recall, per class, averaged (macro by default)."
_KWARGS = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    average (str): 'macro' (unweighted mean over classes), 'micro' or 'weighted'.
    labels (list of int, optional): the classes to average over (default: every class seen).
Returns:
    f1 (float): in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class F1(evaluate.Metric):
    """Multi-class F1 over integer labels (sklearn's definition: a class with no predictions scores 0)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions: list[int], references: list[int], average: str = "macro",
                 labels: list[int] | None = None) -> dict[str, float]:
        from sklearn.metrics import f1_score

        labels = labels if labels is not None else np.union1d(predictions, references)
        score = f1_score(references, predictions, labels=labels, average=average, zero_division=0)
        return {"f1": float(score)}
