"""Accuracy: the fraction of predictions equal to their reference label (an `evaluate` metric module).

Shipped inside the package and loaded by path, so it works with no network and no model hub.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy = correct predictions / all predictions, in [0, 1]."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
Returns:
    accuracy (float): in [0, 1]; 1.0 when every prediction is right.
Example:
    >>> evaluate.load("path/to/accuracy").compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""
_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Top-1 accuracy of class-id predictions."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions: list, references: list) -> dict:
        preds, refs = np.asarray(predictions), np.asarray(references)
        return {"accuracy": float((preds == refs).mean()) if len(refs) else 0.0}
