"""Preflight checks of the LM tasks (`lm`, `smollm2`, `tinylm`): the model (a .gguf file or a save_pretrained
folder) and the corpus, opened as far as the baseline would open them (see Task.check), split by the rules
the baseline splits by (orchestrator.tasks.lm.data), and measured against `task.context`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.tasks.checks import models, paths, tables
from orchestrator.tasks.lm.data import JOIN, SUFFIXES, split_documents


def check(params: Any, sources: dict[str, str]) -> None:
    """The model and the corpus of task params `params` (`sources`: their resolved paths; '' = none/built-in)."""
    model = paths.local("task.model", sources["model"]) if sources.get("model") else None
    if model is not None:
        check_model(params, model)
    corpus = paths.local("task.dataset", params.dataset) if params.dataset else None
    if corpus is not None:
        check_corpus(params, corpus)


def check_model(params: Any, path: Path) -> None:
    """A whole GGUF file or a causal-LM folder that reads `context` tokens."""
    if paths.kind("task.model", path) == "folder":
        positions = models.check_folder("task.model", path, "causal")
    elif path.suffix.lower() == ".gguf":
        positions = models.check_gguf("task.model", path)
    else:
        parent = path.parent if (path.parent / "config.json").is_file() else None
        hint = f": give the folder that holds it ({parent})" if parent else ""
        raise ConfigError("task.model", str(path), f"is a {path.suffix or 'suffix-less'} file; a language model is "
                          f"a .gguf file or a save_pretrained folder{hint}")
    if positions is not None and params.context > positions:
        raise ConfigError("task.context", params.context, f"this model reads at most {positions} tokens")


def check_corpus(params: Any, path: Path) -> None:
    """Readable documents, enough to split, every split longer than one `context` window."""
    if paths.kind("task.dataset", path) == "file":
        docs, complete = documents(path, params.text_column)
        if complete:
            _windows(params, split_documents(docs))
        return
    files = {f.stem: f for f in paths.entries("task.dataset", path) if f.parent == path
             and f.suffix.lower() in SUFFIXES}
    if "train" not in files or "test" not in files:
        raise ConfigError("task.dataset", str(path), "a folder must hold train.* and test.* files "
                          "(" + ", ".join(SUFFIXES) + ")")
    read = {s: documents(files[s], params.text_column) for s in ("train", "test", "validation") if s in files}
    splits = {s: docs for s, (docs, _) in read.items()}
    splits["val"] = splits.pop("validation", splits["test"][:1])
    if all(complete for _, complete in read.values()):
        _windows(params, splits)


def documents(path: Path, column: str) -> tuple[list[str], bool]:
    """The documents of one corpus file (as lm.data.read_documents reads them) and whether all were read."""
    suffix = tables.suffix_of("task.dataset", path, SUFFIXES)
    if suffix == ".txt":
        text, complete = tables.read_text("task.dataset", path)
        return [d.strip() for d in text.split("\n\n") if d.strip()], complete
    table = tables.read_table("task.dataset", path, suffix, wanted=(column,))
    return [str(t) for t in tables.column("task.text_column", path, table, column) if t], table.complete


def _windows(params: Any, splits: dict[str, list[str]]) -> None:
    """Each split holds at least one window of `context` + 1 tokens; a token spells at least one byte, so a
    split of fewer bytes than `context` cannot (what lm.data.windows would find after tokenizing)."""
    for split in ("train", "val", "test"):
        size = len(JOIN.join(splits[split]).encode("utf-8"))
        if size < params.context:
            raise ConfigError("task.context", params.context, f"is longer than the {split} split of the corpus can "
                              f"be ({size:,} bytes of text, so at most about {size:,} tokens): give a larger corpus "
                              "or a shorter task.context")
