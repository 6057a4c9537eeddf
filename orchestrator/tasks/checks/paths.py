"""Path checks every task shares: a local path exists, is the kind asked for, can be read and is not empty.

A value that is not a local path may be a Hugging Face hub id (`org/name`); those are left to the hub (and
refused when offline, see orchestrator.tasks.hf.data.check_source). A value that can only be a path (absolute,
`./`, `~`, a file suffix) and does not exist is refused here, online or not.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from orchestrator.errors import ConfigError

LFS_POINTER = b"version https://git-lfs.github.com/spec/"
PATH_SUFFIXES = (".gguf", ".safetensors", ".bin", ".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt", ".md")


def looks_local(value: str) -> bool:
    """True when `value` can only mean a local path (never a hub id such as `org/name`)."""
    return (value.startswith(("/", "./", "../", "~")) or value.count("/") > 1
            or Path(value).suffix.lower() in PATH_SUFFIXES)


def local(key: str, value: str) -> Path | None:
    """The existing local path `value` names, or None for a hub id; ConfigError for a path that is not there."""
    path = Path(value).expanduser()
    if path.is_symlink() and not path.exists():
        raise ConfigError(key, value, f"is a broken symbolic link (to {os.readlink(path)})")
    if path.exists():
        return path
    if looks_local(value):
        parent = next((p for p in path.parents if p.exists()), None)
        hint = f"; {parent} exists" if parent is not None and parent != Path(".") else ""
        raise ConfigError(key, value, f"no such file or folder{hint}")
    return None


def kind(key: str, path: Path) -> str:
    """'file' or 'folder'; ConfigError for anything else (a device, a pipe) or what cannot be read."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise ConfigError(key, str(path), f"cannot be read ({err.strerror or err})") from None
    if stat.S_ISDIR(mode):
        if not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(key, str(path), "is a folder this user cannot list (permission denied)")
        return "folder"
    if not stat.S_ISREG(mode):
        raise ConfigError(key, str(path), "is neither a regular file nor a folder")
    if not os.access(path, os.R_OK):
        raise ConfigError(key, str(path), "cannot be read by this user (permission denied)")
    return "file"


def whole_file(key: str, path: Path, what: str) -> int:
    """`path` is a readable, non-empty file that holds data (not a Git LFS pointer); returns its size."""
    if kind(key, path) != "file":
        raise ConfigError(key, str(path), f"is a folder, not {what}")
    size = path.stat().st_size
    if size == 0:
        raise ConfigError(key, str(path), f"is empty (0 bytes), not {what}")
    with path.open("rb") as handle:
        if handle.read(len(LFS_POINTER)) == LFS_POINTER:
            raise ConfigError(key, str(path), f"is a Git LFS pointer, not {what}: fetch the real file "
                              "(git lfs pull) or download it again")
    return size


def entries(key: str, folder: Path, limit: int = 10_000) -> list[Path]:
    """The visible files below `folder` (recursively, sorted; the first `limit`); ConfigError for an empty folder."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in sorted(files) if not f.startswith("."))
        if len(found) >= limit:
            break
    if not found:
        raise ConfigError(key, str(folder), "is an empty folder")
    return found[:limit]
