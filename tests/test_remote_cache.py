"""cache.dir as an object-store URL: s3fs against a local S3 endpoint (moto's server, real HTTP + the S3 API).

Two machines are modelled by two mirror folders: what one publishes, the other reads; a node whose upload
was cut before its meta.json is never read; a sweep on the bucket resumes from a fresh mirror.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import free_port, run_cli

from orchestrator.engine.cache import MIRROR_ENV, RemoteCache, open_cache


@pytest.fixture(scope="module")
def s3():
    """A local S3 endpoint with bucket `sweeps`; yields the environment its clients need."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(env["AWS_ENDPOINT_URL"], timeout=2)
            break
        except OSError:
            if time.time() > deadline:
                proc.kill()
                raise
            time.sleep(0.3)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir("sweeps")
    try:
        yield env
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        proc.kill()
        proc.wait(10)


def _node(cache: RemoteCache, key: str, text: str) -> None:
    staged = cache.staging(key)
    (staged / "model.onnx").write_text(text)
    cache.put_eval(key, "e1", {"accuracy": 0.5}, staged)
    cache.commit(key, staged, {"key": key, "model_file": "model.onnx", "stage_metrics": {}})


def test_published_nodes_reach_another_machine_and_half_uploads_never_do(s3, tmp_path, monkeypatch):
    url = "s3://sweeps/unit"
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "machine-a"))
    a = open_cache(url)
    assert isinstance(a, RemoteCache) and a.location == url
    _node(a, "k1", "model bytes")
    # a writer killed mid-publish: its files are up, meta.json never made it
    a.fs.pipe_file(a._remote("k2", "model.onnx"), b"half")
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "machine-b"))
    b = open_cache(url)
    assert b.root != a.root
    assert b.has("k1") and (b.path("k1") / "model.onnx").read_text() == "model bytes"
    assert b.meta("k1")["key"] == "k1" and b.eval_metrics("k1", "e1") == {"accuracy": 0.5}
    assert not b.has("k2") and b.problem("k2") == "absent"
    # a measurement taken later on machine B is published and reaches machine A
    b.put_eval("k1", "e2", {"accuracy": 0.75})
    assert a.eval_metrics("k1", "e2") == {"accuracy": 0.75}
    assert not [p for p in a.fs.find("sweeps/unit/tmp/")]  # temporary keys were moved into place


def test_a_sweep_on_a_bucket_resumes_from_a_fresh_mirror(s3, tmp_path):
    store = {"cache": "s3://sweeps/pkdq", "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
             "artifacts": str(tmp_path / "art")}
    env = {**os.environ, **s3, MIRROR_ENV: str(tmp_path / "mirror-1")}
    out = run_cli(store, "+recipe=pkdq", "executor=pool", "tracking.log_models=false", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "11 unique nodes: 11 stage executions" in out.stdout
    import s3fs

    published = [p for p in s3fs.S3FileSystem().find("sweeps/pkdq/nodes/") if p.endswith("/meta.json")]
    assert len(published) == 11
    env[MIRROR_ENV] = str(tmp_path / "mirror-2")  # another machine: nothing local, everything from the bucket
    again = run_cli(store, "+recipe=pkdq", "tracking.log_models=false", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "11 unique nodes: 0 stage executions, 11 from cache" in again.stdout
    first = json.loads(s3fs.S3FileSystem().cat_file(published[0]))
    assert (tmp_path / "mirror-2").exists() and first["format"] == 2


def test_an_unwritable_bucket_stops_before_compute(s3, tmp_path):
    store = {"cache": "s3://no-such-bucket/x", "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
             "artifacts": str(tmp_path / "art")}
    out = run_cli(store, "+recipe=pkdq", env={**os.environ, **s3, MIRROR_ENV: str(tmp_path / "m")})
    assert out.returncode == 2, out.stderr
    assert "cache.dir='s3://no-such-bucket/x' is not allowed: cannot be written" in out.stderr
    assert "Traceback" not in out.stderr
