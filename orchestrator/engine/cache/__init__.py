"""The cache: a local content-addressed store (`local`), the same store mirrored to an fsspec URL (`remote`),
and `open_cache`, which picks one from `cache.dir`.

The two classes live in one package so that neither module imports the other's caller: `remote` builds on
`local`, and only this module knows both.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.engine.cache.local import FORMAT, META, Cache, unsafe_model_file
from orchestrator.engine.cache.remote import MIRROR_ENV, RemoteCache, check_remote, mirror_dir, remote_fs

__all__ = ["FORMAT", "META", "MIRROR_ENV", "Cache", "RemoteCache", "check_remote", "is_url", "mirror_dir",
           "open_cache", "remote_fs", "unsafe_model_file"]


def is_url(root: str | Path) -> bool:
    """Whether cache.dir names an fsspec URL (s3://, gs://, file://, ...) rather than a folder."""
    return "://" in str(root)


def open_cache(root: str | Path, sweep: bool = True) -> Cache:
    """The cache at `root`: a folder, or an fsspec URL (s3://bucket/prefix) mirrored locally."""
    return RemoteCache(str(root), sweep) if is_url(root) else Cache(root, sweep)
