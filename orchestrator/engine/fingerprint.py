"""What node keys are made of besides params: content hashes of input files and library versions.

A key that hashes a dataset's *path* lies as soon as the file behind it changes; one that ignores the
onnxruntime version lies after an upgrade whose quantizer writes other bytes. So the baseline key
covers a content fingerprint of the task's model and data files, and every key covers the versions of
the libraries that produced its artifact.

Hashing a 100 MB model takes a fraction of a second; it is memoised per file by (size, mtime) in a JSON
file beside the cache, so a rerun or a dry run stays instant. Stdlib only: the planner imports this.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


NPM = "npm:"  # a library name with this prefix is an npm package of the pinned JavaScript runtimes
NPM_MODULES = Path(__file__).resolve().parents[1] / "measure" / "targets" / "browser" / "node_modules"


def library_versions(names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Installed versions of `names` ('absent' where not installed), without importing them: Python
    distributions, and npm packages (`npm:@scope/name`, e.g. the prebuilt llama.cpp the `gguf` stage runs)."""
    out = {}
    for name in sorted(set(names)):
        if name.startswith(NPM):
            out[name] = npm_version(name.removeprefix(NPM))
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def npm_version(package: str) -> str:
    """The installed version of npm `package` among the pinned runtimes ('absent' where not installed)."""
    try:
        return str(json.loads((NPM_MODULES / package / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "absent"


class Fingerprints:
    """Content fingerprints of files and folders, memoised by (size, mtime_ns) in `memo` (optional)."""

    def __init__(self, memo: Path | None = None) -> None:
        self.memo_path = memo
        self._memo: dict[str, Any] = {}
        self._dirty = False
        if memo is not None and memo.is_file():
            with contextlib.suppress(OSError, ValueError):
                loaded = json.loads(memo.read_text())
                self._memo = loaded if isinstance(loaded, dict) else {}

    def of(self, path: str | Path) -> str:
        """sha256 of a file's bytes, or of a folder's sorted (relative path, file hash) list; 'missing' if absent."""
        p = Path(path)
        if p.is_file():
            return self._file(p)
        if p.is_dir():
            h = hashlib.sha256()
            for f in sorted(x for x in p.rglob("*") if x.is_file() and not _hidden(x.relative_to(p))):
                h.update(f"{f.relative_to(p).as_posix()}\0{self._file(f)}\n".encode())
            return h.hexdigest()[:24]
        return "missing"

    def _file(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        seen = self._memo.get(key)
        if isinstance(seen, dict) and seen.get("size") == st.st_size and seen.get("mtime_ns") == st.st_mtime_ns:
            return str(seen["sha256"])
        h = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                h.update(chunk)
        self._memo[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": h.hexdigest()[:24]}
        self._dirty = True
        return self._memo[key]["sha256"]

    def save(self) -> None:
        """Write the memo back (atomically; a failure only costs re-hashing next time)."""
        if not self._dirty or self.memo_path is None:
            return
        tmp = self.memo_path.with_name(f".{self.memo_path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            self.memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self._memo))
            os.replace(tmp, self.memo_path)
            self._dirty = False


def _hidden(rel: Path) -> bool:
    """Dot-files and dot-folders (.git, .cache) are not part of a model or dataset folder's content."""
    return any(part.startswith(".") for part in rel.parts)
