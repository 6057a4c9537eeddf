"""The local cache: a content-addressed store, one folder per node key, written atomically, guarded by file locks.

A node folder holds the model file(s) and `meta.json`. It is built in `tmp/` and renamed into
`nodes/<key>` only when complete, so a killed process never leaves a half-written node that looks
finished. Measurements live beside it in `eval/<settings-hash>.json`, so changing how we measure
re-measures without recomputing the model.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator import faults

META = "meta.json"
FORMAT = 2  # 2: torch models as safetensors + JSON (format 1 pickled them and is never read)


def unsafe_model_file(name: Any) -> str | None:
    """Why a node's model file name is refused (None: fine): only ONNX, GGUF, a GenAI folder's genai_config.json
    and our safetensors files are read (data formats: none of them can run code when loaded)."""
    from orchestrator.artifacts.torch_io import WEIGHTS

    if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
        return f"model file {name!r} is not a plain file name"
    if name not in (WEIGHTS, "genai_config.json") and not name.endswith((".onnx", ".gguf")):
        return (f"model file {name!r} is neither ONNX, GGUF nor {WEIGHTS}: pickled torch files are never loaded "
                "(they can run code)")
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Cache:
    """The store rooted at `root` (created on first use)."""

    def __init__(self, root: str | Path, sweep: bool = True) -> None:
        self.root = Path(root).resolve()
        for sub in ("nodes", "tmp", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if sweep:
            self._sweep_orphans()

    @property
    def location(self) -> str:
        """What workers are given to open this cache (orchestrator.engine.cache.open_cache)."""
        return str(self.root)

    def path(self, key: str) -> Path:
        """Folder of a finished node (may not exist)."""
        return self.root / "nodes" / key

    def has(self, key: str) -> bool:
        """True once the node was committed whole, in this format, with a model file we may read."""
        return self.problem(key) is None

    def problem(self, key: str) -> str | None:
        """Why node `key` cannot be used from the cache ('absent' when it was never committed), or None."""
        path = self.path(key) / META
        if not path.is_file():
            return "absent"
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            return f"unreadable {META} ({err})"
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            return f"written in another cache format than {FORMAT}"
        bad = unsafe_model_file(meta.get("model_file"))
        if bad:
            return bad
        return None if (self.path(key) / meta["model_file"]).is_file() else "its model file is missing"

    def meta(self, key: str) -> dict[str, Any]:
        """The node's meta.json."""
        return json.loads((self.path(key) / META).read_text())

    def model_path(self, key: str) -> Path:
        """The node's main model file (model.safetensors or *.onnx); refuses any other file."""
        name = self.meta(key)["model_file"]
        bad = unsafe_model_file(name)
        if bad:
            raise ValueError(f"cache node {key}: {bad}")
        return self.path(key) / name

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive inter-process lock on one key, so two sweeps never compute the same node twice."""
        with open(self.root / "locks" / f"{key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def locked(self, key: str) -> bool:
        """True if another process holds `key`'s lock right now (it is computing that node)."""
        with open(self.root / "locks" / f"{key}.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def staging(self, key: str) -> Path:
        """A fresh private folder in which to build node `key`."""
        tmp = self.root / "tmp" / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, key: str, staged: Path, meta: dict[str, Any]) -> None:
        """Write meta.json into `staged` and rename it into place (atomic on one filesystem).

        A folder already there that is not a usable node (another format, a refused model file) is moved
        aside first: it never becomes readable as this node.
        """
        _write_json(staged / META, {**meta, "format": FORMAT})
        faults.point("commit:meta")
        if self.path(key).exists() and not self.has(key):
            aside = self.root / "tmp" / f"{key}.{os.getpid()}.refused{uuid.uuid4().hex[:6]}"
            with contextlib.suppress(OSError):
                os.rename(self.path(key), aside)
                shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(staged, self.path(key))
        except OSError:  # another process committed the same key first: identical content, keep theirs
            shutil.rmtree(staged, ignore_errors=True)
            if not self.has(key):
                raise

    def discard(self, staged: Path) -> None:
        """Drop a staging folder after a failure."""
        shutil.rmtree(staged, ignore_errors=True)

    def eval_metrics(self, key: str, eval_hash: str) -> dict[str, Any] | None:
        """Measurements of node `key` under the eval settings hashed as `eval_hash`, if taken."""
        path = self.path(key) / "eval" / f"{eval_hash}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def put_eval(self, key: str, eval_hash: str, metrics: dict[str, Any], folder: Path | None = None) -> None:
        """Store measurements atomically (into a staging folder when the node is not committed yet)."""
        target = (folder or self.path(key)) / "eval" / f"{eval_hash}.json"
        target.parent.mkdir(exist_ok=True)
        _write_json(target, metrics)

    def _sweep_orphans(self) -> None:
        """Remove what processes that died (e.g. SIGKILL mid-node) left half-written: staging folders,
        partial exports and JSON temp files inside committed nodes (never read, but not to be kept)."""
        for tmp in (self.root / "tmp").iterdir():
            parts = tmp.name.split(".")
            if len(parts) == 3 and parts[1].isdigit() and not _pid_alive(int(parts[1])):
                shutil.rmtree(tmp, ignore_errors=True)
        for pattern in ("*/measured.*.onnx.part", "*/eval/*.tmp", "*/*.tmp"):
            for junk in (self.root / "nodes").glob(pattern):
                pid = junk.name.split(".")[1] if junk.name.count(".") >= 2 else ""
                if pid.isdigit() and not _pid_alive(int(pid)):
                    junk.unlink(missing_ok=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON via a temp file + os.replace, so readers never see a partial file."""
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")  # the pid: see _sweep_orphans
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
