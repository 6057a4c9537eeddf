"""Bad environments, as a new user meets them: servers that are down, silent or refusing, folders that cannot
be written, a full disk, task files that would run code. Each exits 2 within seconds, before any compute,
with one line naming the key, and no traceback."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def silent_port():
    """A loopback port that accepts connections and never answers (a hung server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture(scope="module")
def refusing_port():
    """A loopback HTTP server that answers 403 to everything (auth in front of MLflow)."""
    class Forbidden(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            self.send_response(403, "Forbidden")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MB tmpfs: a real full disk (skipped where mounting is not allowed)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def refused(tmp_path: Path, *args: str, env: dict | None = None) -> str:
    """Run the CLI; assert exit 2 within 15 s, nothing computed, one error line, no traceback; return stderr."""
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "orchestrator", "+recipe=pkdq", f"cache.dir={cache}",
           f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifact_root={tmp_path / 'art'}", *args]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                         timeout=60)
    took = time.perf_counter() - start
    message = out.stdout + out.stderr
    assert out.returncode == 2, message
    assert took <= 15, f"took {took:.1f}s: {message}"
    assert "Traceback" not in message
    assert len([m for m in out.stderr.splitlines() if m.startswith("error: ")]) == 1, message
    assert not (cache / "nodes").exists() or not any((cache / "nodes").iterdir())
    return out.stderr


def test_tracking_server_down(tmp_path):
    msg = refused(tmp_path, "tracking.uri=http://127.0.0.1:1")
    assert "tracking.uri='http://127.0.0.1:1' is not allowed: no MLflow server answers at 127.0.0.1:1 " \
           "(connection refused): start it" in msg
    assert "tracking=none" in msg


def test_tracking_server_silent(tmp_path, silent_port):
    msg = refused(tmp_path, f"tracking.uri=http://127.0.0.1:{silent_port}")
    assert "no answer within 5 s" in msg


def test_tracking_server_refuses(tmp_path, refusing_port):
    msg = refused(tmp_path, f"tracking.uri=http://127.0.0.1:{refusing_port}")
    assert "answered HTTP 403" in msg and "MLFLOW_TRACKING_TOKEN" in msg


def test_tracking_host_unknown(tmp_path):
    assert "unknown host name" in refused(tmp_path, "tracking.uri=http://no-such-host.invalid:5000")


def test_tracking_database_down(tmp_path):
    assert "the database at 127.0.0.1:1 does not answer" in refused(
        tmp_path, "tracking.uri=postgresql://user@127.0.0.1:1/mlflow")


def test_cache_dir_cannot_be_created(tmp_path):
    assert "cache.dir='/proc/forbidden' is not allowed: cannot be created or written" in refused(
        tmp_path, "cache.dir=/proc/forbidden")


def test_cache_dir_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert "cache.dir=" in refused(tmp_path, f"cache.dir={tmp_path / 'afile'}")


def test_cache_dir_unwritable_in_dry_run_too(tmp_path):
    assert "cache.dir=" in refused(tmp_path, "cache.dir=/proc/forbidden", "dry_run=true")


def test_artifact_root_unwritable(tmp_path):
    assert "tracking.artifact_root='/proc/x' is not allowed" in refused(tmp_path, "tracking.artifact_root=/proc/x")


def test_sqlite_store_folder_unwritable(tmp_path):
    assert "tracking.uri=" in refused(tmp_path, "tracking.uri=sqlite:////proc/nope/mlflow.db")


def test_full_disk(tmp_path, tiny_disk):
    msg = refused(tmp_path, f"cache.dir={tiny_disk / 'cache'}")
    assert "cache.dir=" in msg and "MB free on its disk" in msg


def test_task_file_in_a_team_folder_that_would_run_code(tmp_path):
    team = tmp_path / "team_conf" / "task"
    team.mkdir(parents=True)
    (team / "evil.yaml").write_text("name: digits\nwidth: {_target_: os.system, command: 'touch /tmp/pwned'}\n")
    msg = refused(tmp_path, "task=evil", env={"ORCHESTRATOR_CONFIG_PATH": str(tmp_path / "team_conf")})
    assert "task='evil' is not allowed: task file" in msg and "'width._target_'" in msg


def test_task_file_on_the_searchpath_with_a_hydra_block(tmp_path):
    team = tmp_path / "conf2" / "task"
    team.mkdir(parents=True)
    (team / "mine.yaml").write_text("# @package _global_\ndefaults:\n  - evilbase\n  - _self_\n")
    (team / "evilbase.yaml").write_text("# @package _global_\nhydra:\n  callbacks:\n    x:\n"
                                        "      _target_: numpy.savetxt\n")
    msg = refused(tmp_path, f"hydra.searchpath=[file://{tmp_path / 'conf2'}]", "task=mine")
    assert "evilbase.yaml contains 'hydra'" in msg


def test_a_team_task_file_without_code_keys_is_found(tmp_path):
    """The same folder mechanism, used honestly, composes (dry run: nothing is computed)."""
    team = tmp_path / "team_conf" / "task"
    team.mkdir(parents=True)
    (team / "small.yaml").write_text("name: digits\nwidth: 8\nhidden: 16\nepochs: 1\n")
    out = subprocess.run([sys.executable, "-m", "orchestrator", "+recipe=pkdq", "task=small", "dry_run=true",
                          f"cache.dir={tmp_path / 'cache'}"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "ORCHESTRATOR_CONFIG_PATH": str(tmp_path / "team_conf")})
    assert out.returncode == 0, out.stderr
    assert "11 nodes (0 cached, 11 new)" in out.stdout


def test_browser_target_without_a_browser(tmp_path):
    msg = refused(tmp_path, "eval.targets=[ort,browser]", "eval.browser.executable=/nonexistent/chromium")
    assert "eval.targets=['ort', 'browser'] is not allowed: the browser target needs: no Chromium found" in msg
    assert "apt-get install chromium" in msg


def test_report_target_not_measured(tmp_path):
    assert "report.target='browser' is not allowed: must be a measured target" in refused(
        tmp_path, "report.target=browser")
