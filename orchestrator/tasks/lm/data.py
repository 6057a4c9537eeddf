"""Text for causal language models: the corpus, its split, and fixed token windows.

The built-in corpus is the standard library's `pydoc_data.topics` (~465k characters of English that
every Python ships): its topics sorted by name and joined by blank lines; the last 10% of the
characters are the test split (~11.4k SmolLM2 tokens), the 5% before them the validation split, the
rest train. A user's corpus is a .txt file (documents separated by blank lines), a .jsonl / .json /
.parquet / .csv table with a text column, or a folder with `train.*` and `test.*` files; a single
file is split by the same rule.

Every split is one token stream (documents joined by a blank line, tokenized without special
tokens), cut into non-overlapping windows of `context + 1` tokens: a window's first `context` tokens
are the input, its last `context` the next-token labels. Every node is scored on the same test windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import ConfigError

TEST_SHARE, VAL_SHARE = 0.10, 0.05
SUFFIXES = (".txt", ".jsonl", ".json", ".parquet", ".csv")
JOIN = "\n\n"


def pydoc_documents() -> list[str]:
    """The stdlib's help topics, sorted by name (the same list on every machine with this Python)."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def split_documents(docs: list[str]) -> dict[str, list[str]]:
    """{'train', 'val', 'test'}: the documents joined, cut by characters (last 10% test, the 5% before val)."""
    text = JOIN.join(docs)
    if len(text) < 1000:
        raise ConfigError("task.dataset", f"{len(text)} characters", "is too small to split into train / val / "
                          "test; give at least a few thousand characters, or a folder with train.* and test.*")
    test_at, val_at = int(len(text) * (1 - TEST_SHARE)), int(len(text) * (1 - TEST_SHARE - VAL_SHARE))
    return {"train": [text[:val_at]], "val": [text[val_at:test_at]], "test": [text[test_at:]]}


def read_documents(path: Path, column: str) -> list[str]:
    """The documents of one file: blank-line separated paragraphs of a .txt, else a table's `column`."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:  # (the preflight check refuses it first; this keeps the message without it)
        raise ConfigError("task.dataset", str(path), "is not a corpus file; this task reads " + ", ".join(SUFFIXES))
    if suffix == ".txt":
        text = path.read_text(encoding="utf-8")
        return [d.strip() for d in text.split("\n\n") if d.strip()]
    import datasets

    kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}[suffix]
    table = datasets.load_dataset(kind, data_files=str(path), split="train")
    if column not in table.column_names:
        raise ConfigError("task.text_column", column, f"is not a column of {path} (columns: "
                          + ", ".join(table.column_names) + ")")
    return [str(t) for t in table[column] if t]


def load_splits(dataset: str, column: str) -> dict[str, list[str]]:
    """Documents per split for `task.dataset` ('' = the built-in pydoc corpus)."""
    if not dataset:
        return split_documents(pydoc_documents())
    path = Path(dataset)
    if path.is_file():
        return split_documents(read_documents(path, column))
    files = {f.stem: f for f in sorted(path.iterdir()) if f.suffix.lower() in SUFFIXES}
    if "train" not in files or "test" not in files:
        raise ConfigError("task.dataset", dataset, "a folder must hold train.* and test.* files "
                          "(" + ", ".join(SUFFIXES) + ")")
    out = {s: read_documents(files[s], column) for s in ("train", "test")}
    out["val"] = read_documents(files["validation"], column) if "validation" in files else out["test"][:1]
    return out


@dataclass
class Windows:
    """Non-overlapping token windows of one split: `ids` is (n, context + 1); `text_bytes` their UTF-8 size."""

    ids: np.ndarray
    text_bytes: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def tokens(self) -> int:
        """How many next-token predictions the windows score."""
        return int(self.ids[:, 1:].size)


def windows(tokenizer: Any, docs: list[str], context: int, limit: int = 0) -> Windows:
    """Tokenize `docs` as one stream and cut it into windows (at most `limit` scored tokens when > 0)."""
    ids = np.asarray(tokenizer(JOIN.join(docs), add_special_tokens=False)["input_ids"], dtype=np.int64)
    n = (len(ids) - 1) // context
    if limit:
        n = min(n, max(1, limit // context))
    if n < 1:
        raise ConfigError("task.context", context, f"is longer than the split's {len(ids)} tokens")
    rows = np.stack([ids[i * context:(i + 1) * context + 1] for i in range(n)])
    # the bytes the scored tokens spell (each label once), for bits per byte
    scored = tokenizer.decode(rows[:, 1:].reshape(-1).tolist())
    return Windows(rows, len(scored.encode("utf-8")))
