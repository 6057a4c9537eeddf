"""F1 score (macro by default): per-class F1 averaged with equal weight per class (an `evaluate` metric module).

Macro F1 exposes a model that sacrifices rare classes, which accuracy hides when classes are imbalanced.
Shipped inside the package and loaded by path, so it works with no network and no model hub.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "F1 = 2 * precision * recall / (precision + recall), averaged over classes ('macro' by default)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    average (str): 'macro' (default: unweighted mean over the classes seen in either list), 'micro',
        'weighted' or 'binary'.
Returns:
    f1 (float): in [0, 1]. A class that is never predicted and never true does not count; a class with
        no true positives scores 0 (no warning).
Example:
    >>> evaluate.load("path/to/f1").compute(predictions=[0, 0, 1], references=[0, 1, 1])
    {'f1': 0.6666666666666666}
"""
_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    """F1 of class-id predictions, macro-averaged unless told otherwise."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions: list, references: list, average: str = "macro") -> dict:
        return {"f1": float(f1_score(references, predictions, average=average, zero_division=0))}
