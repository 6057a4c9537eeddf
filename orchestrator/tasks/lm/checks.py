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
        check_gguf_tokenizer(params, path)
    else:
        parent = path.parent if (path.parent / "config.json").is_file() else None
        hint = f": give the folder that holds it ({parent})" if parent else ""
        raise ConfigError("task.model", str(path), f"is a {path.suffix or 'suffix-less'} file; a language model is "
                          f"a .gguf file or a save_pretrained folder{hint}")
    if positions is not None and params.context > positions:
        raise ConfigError("task.context", params.context, f"this model reads at most {positions} tokens")


MIN_TOKEN_AGREEMENT = 0.98  # SmolLM2's rebuilt tokenizer agrees on 99.8% (whitespace before digits differs)


def check_gguf_tokenizer(params: Any, path: Path) -> None:
    """The tokenizer transformers rebuilds from the GGUF splits the test text as the GGUF's own does in llama.cpp
    (orchestrator.tasks.lm.tokcheck, in a child: these checks import no transformers). Skipped, with a note,
    where llama.cpp is not installed or the comparison itself fails: the baseline then meets any real problem."""
    import json
    import subprocess
    import sys

    memo = _memo(params, path)
    found = json.loads(memo.read_text()) if memo.is_file() else None
    if found is None:
        cmd = [sys.executable, "-m", "orchestrator.tasks.lm.tokcheck", str(path), params.dataset, params.text_column]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            done = None
        lines = done.stdout.strip().splitlines() if done is not None and done.returncode == 0 else []
        if not lines:
            why = "timed out" if done is None else (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"note: task.model={path}: its tokenizer was not compared with llama.cpp's ({why[:200]})",
                  file=sys.stderr)
            return
        found = json.loads(lines[-1])
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps(found))
    if found["agreement"] < MIN_TOKEN_AGREEMENT:
        raise ConfigError("task.model", str(path), f"the tokenizer transformers rebuilds from this GGUF splits the "
                          f"test text unlike the GGUF's own in llama.cpp (only {found['agreement']:.1%} of ids agree; "
                          f"{found['transformers_ids']:,} ids vs {found['gguf_ids']:,}): every perplexity would "
                          "describe other tokens than a llama.cpp or Ollama user's; give the model as a "
                          "save_pretrained folder with its tokenizer files instead")


def _memo(params: Any, path: Path) -> Path:
    """Where the comparison of this GGUF on this text is kept: it takes seconds at every preflight and only a
    change of the file, the corpus or the libraries doing it can change it (`$ORCHESTRATOR_HOME/tokcheck/`)."""
    import hashlib
    import json
    import os
    from importlib.metadata import PackageNotFoundError, version

    from orchestrator.artifacts.llamacpp import PACKAGE_DIR

    def stat(p: str | Path) -> list[object]:
        q = Path(p)
        return [str(q.resolve()), q.stat().st_size, q.stat().st_mtime_ns] if str(p) and q.is_file() else [str(p)]

    try:
        libs = [version("transformers"), version("tokenizers")]
    except PackageNotFoundError:
        libs = []
    package = PACKAGE_DIR / "package.json"
    what = [stat(path), stat(params.dataset), params.text_column, libs,
            package.read_text() if package.is_file() else os.environ.get("ORCHESTRATOR_LLAMA_LIB", "")]
    home = Path(os.environ.get("ORCHESTRATOR_HOME") or Path.home() / ".cache" / "orchestrator")
    return home / "tokcheck" / f"{hashlib.sha256(json.dumps(what).encode()).hexdigest()[:24]}.json"


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
