"""What the installed transformers can load, read from its source tables without importing it.

Importing transformers imports torch (~3 s on 2 cores), which a check that runs before every sweep (and a
fully cached rerun, which never imports torch) cannot afford. The tables are module-level literals in
transformers' own files: `CONFIG_MAPPING_NAMES` (every model_type), the causal-LM and sequence-classification
head tables, and the GGUF architectures its loader converts. When a table cannot be read that way (a future
layout), transformers is imported and asked instead.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

TABLES = {  # name -> (file inside the transformers package, module to import when the file cannot be read)
    "CONFIG_MAPPING_NAMES": ("models/auto/configuration_auto.py", "transformers.models.auto.configuration_auto"),
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES": ("models/auto/modeling_auto.py", "transformers.models.auto.modeling_auto"),
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES": ("models/auto/modeling_auto.py",
                                                        "transformers.models.auto.modeling_auto"),
    "GGUF_CONFIG_MAPPING": ("integrations/ggml.py", "transformers.integrations.ggml"),
}


def transformers_version() -> str | None:
    """The installed transformers version, or None when it is not installed."""
    try:
        return version("transformers")
    except PackageNotFoundError:
        return None


@functools.cache
def names(table: str) -> frozenset[str]:
    """The keys of one of transformers' tables (TABLES); empty when transformers is not installed."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        return frozenset()
    file, module = TABLES[table]
    found = _literal_keys(Path(spec.origin).parent / file, table)
    if found:
        return found
    return frozenset(getattr(importlib.import_module(module), table))


def _literal_keys(path: Path, name: str) -> frozenset[str]:
    """The string keys of the dict or OrderedDict([...]) literal assigned to `name` in `path` (empty if none)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return frozenset()
    for node in tree.body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if not any(isinstance(t, ast.Name) and t.id == name for t in targets) or node.value is None:
            continue
        value = node.value
        if isinstance(value, ast.Dict):
            return frozenset(k.value for k in value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str))
        if isinstance(value, ast.Call) and value.args and isinstance(value.args[0], (ast.List, ast.Tuple)):
            return frozenset(e.elts[0].value for e in value.args[0].elts if isinstance(e, ast.Tuple) and e.elts
                             and isinstance(e.elts[0], ast.Constant) and isinstance(e.elts[0].value, str))
    return frozenset()


def gguf_architectures() -> frozenset[str]:
    """The `general.architecture` values transformers converts from GGUF (its loader's renames included)."""
    known = names("GGUF_CONFIG_MAPPING") - {"general", "tokenizer"}
    renamed = {a.replace("_moe", "moe") for a in known} | {"t5encoder"}  # qwen2moe -> qwen2_moe, t5encoder -> t5
    return known | renamed
