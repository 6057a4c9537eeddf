"""Data for Hugging Face text classification: source checks, loading, seeded splits, tokenized batches.

Sources are local files (csv / tsv / json / jsonl / parquet), a local folder that `datasets` can read
(files named train.*, test.*, validation.*), or a hub id when the hub is reachable. Every split is
tokenized once, unpadded; batches are padded on the fly (see `Encoded.batch`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import ConfigError
from orchestrator.tasks.checks.paths import looks_local

FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SPLITS = ("train", "val", "test")


def offline() -> bool:
    """True when the Hugging Face hub must not be contacted (HF_HUB_OFFLINE or its older aliases)."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(n, "").strip().lower() in ("1", "true", "yes", "on") for n in names)


def check_source(key: str, value: str, what: str) -> None:
    """Fail fast (at validation, before any compute) on a source that cannot be loaded here.

    An existing local path passes here (what it holds is the task's preflight check, see Task.check); anything
    else is a hub id, refused when offline.
    """
    if not value:
        raise ConfigError(key, value, f"required: a local {what} path (or a hub id when the hub is reachable)")
    path = Path(value).expanduser()
    if path.exists():
        return
    if looks_local(value):  # only a path can look like this, never a hub id: say so, online or not
        raise ConfigError(key, value, f"no such file or folder (a local {what} was meant)")
    if offline():
        raise ConfigError(key, value, f"no such local {what}, and HF_HUB_OFFLINE=1 forbids the hub: "
                                      f"give a local path to the {what} instead of a hub id")


def load_table(source: str, encoding: str) -> dict[str, Any]:
    """The raw splits of `source` as a `datasets.DatasetDict` (a single file loads as split 'train')."""
    import datasets

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    path = Path(source).expanduser()
    if path.is_file():
        builder = FORMATS.get(path.suffix.lower())
        if builder is None:
            raise ConfigError("task.dataset", source, "unsupported file type; use one of " + ", ".join(FORMATS))
        kwargs: dict[str, Any] = {"sep": "\t"} if path.suffix.lower() == ".tsv" else {}
        if builder == "csv":
            kwargs["encoding"] = encoding  # pandas does the decoding (e.g. latin-1 tweets)
        return datasets.load_dataset(builder, data_files=str(path), **kwargs)
    return datasets.load_dataset(str(path) if path.exists() else source)


def _column(table: Any, name: str, key: str) -> list:
    if name not in table.column_names:
        raise ConfigError(key, name, "no such column; the data has: " + ", ".join(table.column_names))
    return table[name]


def _clean(texts: list, labels: list, dedupe: bool) -> tuple[list[str], list]:
    """Drop rows with no text or no label (and repeated texts when asked), keeping the order."""
    seen: set[str] = set()
    out_t, out_l = [], []
    for text, label in zip(texts, labels, strict=True):
        if text is None or label is None or (isinstance(label, float) and np.isnan(label)) or not str(text).strip():
            continue
        if dedupe:
            if text in seen:
                continue
            seen.add(text)
        out_t.append(str(text))
        out_l.append(label)
    return out_t, out_l


def split_rows(p: Any, seed: int) -> tuple[dict[str, tuple[list[str], list]], list[str]]:
    """{'train'|'val'|'test': (texts, raw labels)} and the class names, per the task params `p`.

    'pool' holds the texts of the train split that `train_size` left out (no labels: what `trim` may
    count with `corpus: pool`; never val or test texts).

    Named splits are used where the data has them; missing val/test splits are carved out of train
    with a permutation seeded by `seed`, so the split is the same on every run with that seed.
    """
    tables = load_table(p.dataset, p.encoding)
    if p.train_split not in tables:
        raise ConfigError("task.train_split", p.train_split, "no such split; the data has: " + ", ".join(tables))
    rows = {}
    for split, name in (("train", p.train_split), ("val", p.val_split), ("test", p.test_split)):
        if name in tables:
            table = tables[name]
            rows[split] = _clean(_column(table, p.text_column, "task.text_column"),
                                 _column(table, p.label_column, "task.label_column"), p.drop_duplicates)
    rng = np.random.default_rng(seed)
    train = rows["train"]
    order = rng.permutation(len(train[0]))
    for split, size in (("test", p.test_size), ("val", p.val_size)):
        if split not in rows:  # carve it out of train: a fifth for test unless sized, nothing for val
            n = size or (len(order) // 5 if split == "test" else 0)
            rows[split] = ([train[0][i] for i in order[:n]], [train[1][i] for i in order[:n]])
            order = order[n:]
    rows["train"] = ([train[0][i] for i in order], [train[1][i] for i in order])
    rows["pool"] = ([train[0][i] for i in order[p.train_size:]], []) if p.train_size else ([], [])
    for split, size in (("train", p.train_size), ("val", p.val_size), ("test", p.test_size)):
        if size and len(rows[split][0]) > size:
            pick = np.sort(rng.permutation(len(rows[split][0]))[:size]) if split != "train" else np.arange(size)
            rows[split] = ([rows[split][0][i] for i in pick], [rows[split][1][i] for i in pick])
    return rows, class_names(p.labels, rows["train"][1])


def class_names(given: list, train_labels: list) -> list[str]:
    """The label order: `task.labels` when given, else the sorted distinct labels of the train split."""
    if given:
        return [str(x) for x in given]
    distinct = sorted(set(train_labels))
    if len(distinct) < 2:
        raise ConfigError("task.label_column", distinct, "the train split needs at least two distinct labels")
    return [str(x) for x in distinct]


def label_ids(labels: list, names: list[str]) -> np.ndarray:
    """Raw labels (names or ints) -> class ids by position in `names`."""
    index = {n: i for i, n in enumerate(names)}
    missing = sorted({str(x) for x in labels} - set(index))
    if missing:
        raise ConfigError("task.labels", names, f"labels {missing[:5]} of the data are not listed")
    return np.array([index[str(x)] for x in labels], dtype=np.int64)


@dataclass
class Encoded:
    """One tokenized split: per input name, one unpadded int array per example; labels as class ids."""

    columns: dict[str, list[np.ndarray]]
    labels: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self) -> np.ndarray:
        """Token count of every example."""
        return np.array([len(x) for x in self.columns["input_ids"]])

    def batch(self, idx: np.ndarray, pad_to: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Inputs of examples `idx` padded (right) to `pad_to`, or to the longest of them when None."""
        width = pad_to or max(len(self.columns["input_ids"][i]) for i in idx)
        out = {}
        for name, seqs in self.columns.items():
            fill = self.pad_id if name == "input_ids" else 0  # attention_mask and token_type_ids pad with 0
            arr = np.full((len(idx), width), fill, dtype=np.int64)
            for row, i in enumerate(idx):
                arr[row, :len(seqs[i])] = seqs[i][:width]
            out[name] = arr
        return out, self.labels[idx]


def joined(first: Encoded, second: Encoded, n: int) -> Encoded:
    """`first` followed by the first `n` examples of `second` (e.g. a distillation transfer set)."""
    return Encoded({k: v + second.columns[k][:n] for k, v in first.columns.items()},
                   np.r_[first.labels, second.labels[:n]], first.pad_id)


def encode(tokenizer: Any, texts: list[str], labels: np.ndarray, max_length: int, names: list[str]) -> Encoded:
    """Tokenize once (truncated to `max_length`, no padding) and keep only the model's input names."""
    enc = tokenizer(texts, truncation=True, max_length=max_length) if texts else {n: [] for n in names}
    columns = {n: [np.asarray(x, dtype=np.int64) for x in enc[n]] for n in names}
    return Encoded(columns, labels, tokenizer.pad_token_id or 0)


def grouped_order(lengths: np.ndarray, batch_size: int, perm: np.ndarray, batch_perm: Any) -> Iterator[np.ndarray]:
    """Shuffled batches of similar length (as `group_by_length` does): a random order is cut into chunks
    of 50 batches, each chunk is sorted by length, and the batches are visited in random order.
    Padding to the longest in a batch then wastes little compute, which on CPU is most of the cost.
    """
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(perm), chunk):
        part = perm[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    for j in batch_perm(len(batches)):
        yield batches[int(j)]
