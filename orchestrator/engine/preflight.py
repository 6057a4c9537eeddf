"""Checks that run before any compute: the cache, the tracking store and the artifact folder are usable, and
every task of the plan can read its model and data.

Each failure is a ConfigError naming the key (`cache.dir`, `tracking.uri`, `tracking.artifact_root`),
the value and what to do, so a down server or a read-only folder costs seconds, not a traceback after
minutes. The tracking probe is one HTTP request with a short timeout: MLflow's own client would retry
for about four minutes before giving up.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError

PROBE_TIMEOUT_S = 5.0
MIN_FREE_MB = 100  # below this a sweep would fail mid-way writing models: say so up front
LOCAL_HINT = "or log locally with tracking.uri=sqlite:///mlruns/mlflow.db, or turn tracking off with tracking=none"


def check_cache(folder: str) -> None:
    """cache.dir: a writable folder with room, or a writable fsspec URL (and room for its local mirror)."""
    from orchestrator.engine.cache import check_remote, is_url, mirror_dir

    if is_url(folder):
        check_remote("cache.dir", folder)
        check_folder("cache.dir", mirror_dir(folder))
    else:
        check_folder("cache.dir", folder)


def check_tasks(roots: list[Any], tasks: dict[str, type]) -> None:
    """Every distinct task of the plan's `roots` (baseline nodes) opens its model and data (Task.check):
    a broken file is refused here in a second, not by a traceback from inside the first node."""
    seen: set[str] = set()
    for root in roots:
        params = json.dumps(root.params, sort_keys=True, default=str)
        if params not in seen:
            seen.add(params)
            cls = tasks[root.params["name"]]
            cls.check(cls.Params(**root.params))


def check_plan(plan: Any, tasks: dict[str, type]) -> None:
    """Every task of `plan` opens its model and data, and every step can run here (see the two below)."""
    from orchestrator.stages import REGISTRY

    check_tasks(plan.children(None), tasks)
    check_stages(plan, REGISTRY, tasks)


def check_stages(plan: Any, stages: dict[str, type], tasks: dict[str, type]) -> None:
    """Every distinct (step, task) of the plan can run here (Stage.preflight: e.g. its runtime is installed
    and it can read the task's model), so a missing package is one line before the first node, not after it."""
    root_of: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for node in plan.nodes.values():  # topological: a parent comes before its children
        root_of[node.key] = node.params if node.parent is None else root_of[node.parent]
        cls = stages.get(node.stage) if node.parent is not None else None
        if cls is None:
            continue
        task = root_of[node.key]
        mark = json.dumps([node.stage, node.params, task], sort_keys=True, default=str)
        if mark not in seen:
            seen.add(mark)
            task_cls = tasks[task["name"]]
            cls.preflight(cls.Params(**node.params), task_cls, task_cls.Params(**task))


def check_folder(key: str, folder: str | Path, min_free_mb: float = MIN_FREE_MB) -> None:
    """`folder` can be created, written and has room; ConfigError naming `key` otherwise."""
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        what = "the disk is full" if err.errno == errno.ENOSPC else f"{type(err).__name__}: {err.strerror or err}"
        raise ConfigError(key, str(folder), f"cannot be created or written ({what}); choose a writable folder") \
            from None
    free_mb = shutil.disk_usage(path).free / 1e6
    if free_mb < min_free_mb:
        raise ConfigError(key, str(folder), f"only {free_mb:.1f} MB free on its disk (a sweep needs at least "
                          f"{min_free_mb} MB for models and measurements); free space or choose another folder")


def check_tracking(tracking: dict[str, Any]) -> None:
    """The tracking store answers (http), or its local folder is writable (sqlite, file)."""
    if not tracking.get("enabled", True):
        return
    uri = str(tracking["uri"])
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme in ("http", "https"):
        probe_server(uri)
        return
    if scheme == "sqlite":
        db = uri.split(":///", 1)[-1]
        if db and db != ":memory:":
            check_folder("tracking.uri", Path(db).expanduser().parent)
    elif scheme in ("", "file"):
        check_folder("tracking.uri", uri.removeprefix("file://"))
    elif scheme.startswith(("postgresql", "mysql", "mssql")):
        _tcp_probe(uri)
    check_folder("tracking.artifact_root", tracking["artifact_root"])


def probe_server(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """One cheap MLflow API call (list one experiment); ConfigError saying what is wrong and what to do."""
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    request = urllib.request.Request(url, headers=_auth_headers())
    parsed = urllib.parse.urlparse(uri)
    where = f"{parsed.hostname}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (the user's own URI)
            json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        hint = ("it refuses this client: set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or "
                "MLFLOW_TRACKING_TOKEN" if err.code in (401, 403) else "is it an MLflow tracking server?")
        raise ConfigError("tracking.uri", uri, f"the server at {where} answered HTTP {err.code} ({err.reason}); "
                          f"{hint} ({LOCAL_HINT})") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError("tracking.uri", uri, f"no MLflow server answers at {where} ({_why(reason, timeout)}): "
                          f"start it (mlflow server --host {parsed.hostname} --port {parsed.port or 80}), "
                          f"{LOCAL_HINT}") from None


def _why(reason: Any, timeout: float) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return "unknown host name"
    if isinstance(reason, ValueError):
        return f"not an MLflow API answer: {reason}"
    return str(reason)


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's client would send (its environment variables)."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def _tcp_probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """A database store: its host:port accepts a TCP connection."""
    parsed = urllib.parse.urlparse(uri)
    host, port = parsed.hostname or "localhost", parsed.port or {"postgresql": 5432, "mysql": 3306}.get(
        parsed.scheme.split("+")[0], 1433)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise ConfigError("tracking.uri", uri, f"the database at {host}:{port} does not answer "
                          f"({_why(err, timeout)}); start it, {LOCAL_HINT}") from None
