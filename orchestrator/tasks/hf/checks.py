"""Preflight checks of the `hf` and `tweets` tasks: the model folder and the labelled table, opened as far as
the baseline would open them (see Task.check), with the rules the baseline splits and encodes by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.tasks.checks import models, paths, tables
from orchestrator.tasks.hf.data import FORMATS

SUFFIXES = tuple(FORMATS)
MAX_FILES = 50  # data files of a folder whose columns are checked (a folder of shards: the first ones)


def check(params: Any, sources: dict[str, str]) -> None:
    """The model folder and the data of task params `params` (`sources`: their resolved paths)."""
    model = paths.local("task.model", sources.get("model", ""))
    if model is not None:
        check_model(params, model)
    data = paths.local("task.dataset", sources.get("dataset", ""))
    if data is not None:
        check_data(params, data)


def check_model(params: Any, path: Path) -> None:
    """A save_pretrained folder with a sequence-classification architecture that reads `max_length` tokens."""
    if paths.kind("task.model", path) == "file":
        parent = path.parent if (path.parent / "config.json").is_file() else None
        hint = f": give the folder that holds it ({parent})" if parent else ""
        raise ConfigError("task.model", str(path), f"is a file; this task reads a model folder "
                          f"({models.FOLDER_FILES}){hint}")
    positions = models.check_folder("task.model", path, "classifier")
    if positions is not None and params.max_length > positions:
        raise ConfigError("task.max_length", params.max_length, f"this model reads at most {positions} tokens")


def check_data(params: Any, path: Path) -> None:
    """A table (or a folder of tables) with the text and label columns, big enough to split."""
    if paths.kind("task.dataset", path) == "folder":
        files = paths.entries("task.dataset", path)
        found = [f for f in files if f.suffix.lower() in SUFFIXES]
        if not found:
            raise ConfigError("task.dataset", str(path), f"holds no data file this task reads ({', '.join(SUFFIXES)}"
                              f"); it holds {', '.join(f.name for f in files[:5])}{' ...' if len(files) > 5 else ''}")
        for file in found[:MAX_FILES]:
            _labelled(params, file)
        return
    if params.train_split != "train":
        raise ConfigError("task.train_split", params.train_split, "no such split; a single file is split 'train'")
    _enough(params, path, _labelled(params, path))


def _labelled(params: Any, path: Path) -> tuple[list[tuple[str, str]], bool]:
    """The usable (text, label) rows of one file (missing or blank ones dropped, as the loader drops them)."""
    suffix = tables.suffix_of("task.dataset", path, SUFFIXES)
    table = tables.read_table("task.dataset", path, suffix, params.encoding, "task.encoding",
                              (params.text_column, params.label_column))
    texts = tables.column("task.text_column", path, table, params.text_column)
    labels = tables.column("task.label_column", path, table, params.label_column)
    rows = [(t, lab if isinstance(lab, (str, int, float)) else str(lab)) for t, lab in zip(texts, labels, strict=True)
            if not tables.blank(t) and not tables.blank(lab)]
    names = {raw: _as_loaded(raw, suffix) for raw in {lab for _, lab in rows}}  # (each distinct label once)
    rows = [(str(t), names[lab]) for t, lab in rows]
    if params.labels:
        missing = sorted(set(names.values()) - {str(x) for x in params.labels})
        if missing:
            raise ConfigError("task.labels", params.labels, f"labels {missing[:5]} of the data are not listed")
    return rows, table.complete


def _as_loaded(value: Any, suffix: str) -> str:
    """A label as the loader's class names spell it: a csv cell is parsed as a number where it is one."""
    if suffix in (".csv", ".tsv") and isinstance(value, str):
        for kind in (int, float):
            try:
                return str(kind(value))
            except ValueError:
                continue
    return str(value)


def _enough(params: Any, path: Path, found: tuple[list[tuple[str, str]], bool]) -> None:
    """Rows for test, validation and training, and two classes (the rules of hf.data.split_rows)."""
    rows, complete = found
    if not complete:
        return  # READ_LIMIT bytes of rows and more: enough for any split
    if params.drop_duplicates:
        rows = list({text: (text, label) for text, label in reversed(rows)}.values())
    n = len(rows)
    test, val = params.test_size or n // 5, params.val_size
    if n - test - val < 1 or test < 1:
        raise ConfigError("task.dataset", f"{n} usable rows", f"is too small to split into train / val / test "
                          f"(test {test}, validation {val}, leaving {max(0, n - test - val)} to train on): give "
                          "more rows or lower task.test_size / task.val_size")
    distinct = {label for _, label in rows}
    if not params.labels and len(distinct) < 2:
        raise ConfigError("task.label_column", params.label_column, f"has {len(distinct)} distinct label(s) in "
                          f"{path}; a classifier needs at least two")
