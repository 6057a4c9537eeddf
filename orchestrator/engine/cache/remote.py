"""The cache on an object store, or any fsspec URL (`cache.dir=s3://bucket/prefix`): a local mirror + the remote.

Nodes are built, checked and read in a local mirror folder exactly like the local cache (so everything a
node folder must pass, format and file names, is checked on this machine); the remote holds the
published copy every worker sees. Publishing a node uploads its files under `nodes/<key>/`, then writes
`meta.json` last, under a temporary key moved into place: a reader trusts a remote node only once its
meta.json exists, so a killed upload is never read as a node. Measurements (`eval/<hash>.json`) are
published the same way. Locks are per machine: two machines may compute one node at once; both results
are valid for its key and the first one published is kept.

The mirror lives in `$ORCHESTRATOR_MIRROR` (default ~/.cache/orchestrator/mirror), one folder per URL.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from orchestrator.engine.cache.local import META, Cache

MIRROR_ENV = "ORCHESTRATOR_MIRROR"


def mirror_dir(url: str) -> Path:
    """This machine's mirror of the cache at `url`."""
    base = Path(os.environ.get(MIRROR_ENV) or Path.home() / ".cache" / "orchestrator" / "mirror")
    return base / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def remote_fs(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, base path) of `url`; ImportError names the package to install."""
    import fsspec

    return fsspec.core.url_to_fs(url.rstrip("/"))


class RemoteCache(Cache):
    """A Cache whose nodes are also published to, and fetched from, the fsspec URL `url`."""

    def __init__(self, url: str, sweep: bool = True) -> None:
        self.url = url.rstrip("/")
        self.fs, self.base = remote_fs(self.url)
        super().__init__(mirror_dir(self.url), sweep)

    @property
    def location(self) -> str:
        """What workers are given to open this cache: the URL."""
        return self.url

    def _remote(self, key: str, *parts: str) -> str:
        return "/".join([self.base, "nodes", key, *parts])

    def path(self, key: str) -> Path:
        """The node's mirror folder, fetched from the remote first when this machine lacks it."""
        local = super().path(key)
        if not local.exists():
            self._fetch(key)
        return local

    def _fetch(self, key: str) -> None:
        """Download a published node (meta.json present) into the mirror, whole or not at all."""
        if not self._exists(self._remote(key, META)):
            return
        staged = self.staging(key)
        try:
            prefix = self._remote(key) + "/"
            for name in self.fs.find(prefix):
                rel = name[len(prefix):]
                if ".." in rel.split("/") or rel.endswith(".tmp"):  # nothing lands outside the node's folder
                    continue
                (staged / rel).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(name, str(staged / rel))
            os.rename(staged, super().path(key))
        except OSError:  # another process fetched it first, or the store went away: the node stays absent
            shutil.rmtree(staged, ignore_errors=True)

    def commit(self, key: str, staged: Path, meta: dict[str, Any]) -> None:
        """Commit into the mirror, then publish: the files, then meta.json last."""
        super().commit(key, staged, meta)
        if self._exists(self._remote(key, META)):  # published by another machine meanwhile: keep theirs
            return
        folder = super().path(key)
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != META):
            self.fs.put_file(str(path), self._remote(key, *path.relative_to(folder).parts))
        self._publish(folder / META, self._remote(key, META))

    def put_eval(self, key: str, eval_hash: str, metrics: dict[str, Any], folder: Path | None = None) -> None:
        """Store measurements; those of a committed node are published too (with the node's commit otherwise)."""
        super().put_eval(key, eval_hash, metrics, folder)
        if folder is None:
            name = f"{eval_hash}.json"
            self._publish(super().path(key) / "eval" / name, self._remote(key, "eval", name))

    def eval_metrics(self, key: str, eval_hash: str) -> dict[str, Any] | None:
        """Measurements from the mirror, else those another machine published."""
        found = super().eval_metrics(key, eval_hash)
        remote = self._remote(key, "eval", f"{eval_hash}.json")
        if found is None and self._exists(remote):
            local = super().path(key) / "eval" / f"{eval_hash}.json"
            local.parent.mkdir(exist_ok=True)
            partial = local.with_name(f"{local.stem}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
            self.fs.get_file(remote, str(partial))
            os.replace(partial, local)
            found = super().eval_metrics(key, eval_hash)
        return found

    def _exists(self, remote: str) -> bool:
        """Asked of the store, not of fsspec's listing cache (another machine may have published since)."""
        self.fs.invalidate_cache(remote.rsplit("/", 1)[0])
        return self.fs.exists(remote)

    def _publish(self, local: Path, remote: str) -> None:
        """Upload under a temporary key, then move into place (a single object appears whole)."""
        tmp = f"{self.base}/tmp/{uuid.uuid4().hex}.{local.name}"
        self.fs.put_file(str(local), tmp)
        self.fs.mv(tmp, remote)


def check_remote(key: str, url: str) -> None:
    """The store at `url` can be listed and written (a probe object is written and removed)."""
    from orchestrator.errors import ConfigError

    try:
        fs, base = remote_fs(url)
    except ImportError as err:
        raise ConfigError(key, url, f"needs an fsspec backend for this URL ({err}); for s3:// install "
                          "the remote extra: pip install -e \".[remote]\"") from None
    except (ValueError, OSError) as err:
        raise ConfigError(key, url, f"is not a usable fsspec URL ({err})") from None
    probe = f"{base}/tmp/.write-test-{uuid.uuid4().hex[:8]}"
    try:
        fs.pipe_file(probe, b"ok")
        fs.rm_file(probe)
    except Exception as err:  # each backend raises its own types (botocore, gcsfs, ...)
        first = str(err).splitlines()[0] if str(err) else ""
        raise ConfigError(key, url, f"cannot be written ({type(err).__name__}: {first}); check the bucket, the "
                          "credentials (the backend's own settings, e.g. AWS_* variables) and the endpoint") \
            from None
