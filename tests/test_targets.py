"""Measurement targets with the real runtimes: onnxruntime-web in headless Chromium, onnxruntime-node in Node.js.

Skipped where Chromium or the npm packages are missing (CI installs them: see .ci/run).
"""

from __future__ import annotations

import http.client
import shutil
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient

from orchestrator.measure.evaluate import EvalSettings
from orchestrator.measure.targets.base import TargetError
from orchestrator.measure.targets.browser import ORT_WEB, BrowserTarget, _Session
from orchestrator.measure.targets.node import ORT_NODE, NodeTarget

needs_browser = pytest.mark.skipif(not shutil.which("chromium") or not ORT_WEB.exists(),
                                   reason="Chromium and onnxruntime-web are installed by .ci/run")
needs_node = pytest.mark.skipif(not shutil.which("node") or not ORT_NODE.exists(), reason="needs onnxruntime-node")


def headless_chromium_pids() -> set[int]:
    """Every headless Chromium on the machine (to see what a finished sweep left behind)."""
    pids = set()
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "chromium" in cmd and "--headless" in cmd:
            pids.add(p.pid)
    return pids


def browsers_alive() -> list[psutil.Process]:
    """Headless Chromium processes started by this test process (never another program's browser)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "chromium" in cmd and "--headless" in cmd:
            out.append(p)
    return out


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory, digits, baseline) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    digits.export(baseline, path, 17, "torchscript")
    return path


def settings(**kw) -> EvalSettings:
    return EvalSettings.from_config({"warmup": 3, "repeats": 20, "samples": 50,
                                     "targets": ["ort", "browser", "node"], "browser": {"threads": 1},
                                     "node": {"threads": 1}, **kw})


@needs_browser
def test_browser_reproduces_onnx_runtime(digits, digits_onnx):
    m = BrowserTarget().measure(digits_onnx, digits, settings())
    assert m["browser_isolated"] == 1.0  # COOP/COEP worked: WASM threads and a fine timer are available
    assert m["browser_max_abs_diff"] < 1e-4
    assert abs(m["browser_accuracy"] - m["browser_ref_accuracy"]) <= 1 / 50 + 1e-9
    assert 0 < m["browser_download_br_mb"] < m["browser_download_gzip_mb"] < digits_onnx.stat().st_size / 1e6
    assert m["browser_download_mb"] > 0 and m["browser_runtime_download_mb"] > 1  # the WASM runtime is MBs
    assert m["browser_memory_mb"] > 0 and m["browser_first_inference_ms"] > 0
    assert 0 < m["browser_latency_p50_ms"] <= m["browser_latency_p95_ms"]


@needs_node
def test_node_reproduces_onnx_runtime(digits, digits_onnx):
    m = NodeTarget().measure(digits_onnx, digits, settings())
    assert m["node_max_abs_diff"] < 1e-4 and m["node_accuracy"] == m["node_ref_accuracy"]
    assert m["node_memory_mb"] > 10 and 0 < m["node_latency_p50_ms"] <= m["node_latency_p95_ms"]


@needs_browser
def test_killing_the_browser_fails_that_measurement_only(digits, digits_onnx):
    target = BrowserTarget()
    _Session.close_current()

    def kill_soon():  # a crash of the browser, from outside, while the page is measuring
        deadline = time.time() + 60
        while not browsers_alive() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(3)
        for proc in browsers_alive():
            proc.kill()

    killer = threading.Thread(target=kill_soon)
    killer.start()
    with pytest.raises(TargetError) as err:
        target.measure(digits_onnx, digits, settings(repeats=10**6))  # would run for minutes
    killer.join(60)
    assert str(err.value).startswith("the browser died during the measurement")
    again = target.measure(digits_onnx, digits, settings())  # the next measurement starts a new browser
    assert again["browser_max_abs_diff"] < 1e-4
    _Session.close_current()
    time.sleep(1)
    assert not browsers_alive()


@needs_browser
def test_static_server_headers_encodings_and_nothing_else(tmp_path):
    from orchestrator.measure.targets.server import StaticServer

    (tmp_path / "a.wasm").write_bytes(b"\0asm" + b"x" * 5000)
    server = StaticServer()
    server.add("/ort/a.wasm", tmp_path / "a.wasm")
    try:
        host, port = server.httpd.server_address
        for accept, encoding in (("gzip, deflate, br", "br"), ("gzip", "gzip"), ("", None)):
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", "/ort/a.wasm", headers={"Accept-Encoding": accept})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and resp.getheader("Content-Type") == "application/wasm"
            assert resp.getheader("Cross-Origin-Opener-Policy") == "same-origin"
            assert resp.getheader("Cross-Origin-Embedder-Policy") == "require-corp"
            assert resp.getheader("Content-Encoding") == encoding
            assert (len(body) < 5004) == (encoding is not None)
        for path in ("/ort/../a.wasm", "/a.wasm", f"/{tmp_path}/a.wasm", "/etc/passwd"):
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", path)
            assert conn.getresponse().status == 404
    finally:
        server.close()


def _spy_compressor(monkeypatch) -> list[tuple[str, str, bool]]:
    """Every compression, recorded as (file name, encoding, whether on the main thread, not a request's)."""
    from orchestrator.measure.targets import server as srv

    calls: list[tuple[str, str, bool]] = []
    real = srv._compress

    def spy(src: Path, dst: Path, encoding: str) -> None:
        calls.append((src.name, encoding, threading.current_thread() is threading.main_thread()))
        real(src, dst, encoding)

    monkeypatch.setattr(srv, "_compress", spy)
    return calls


@needs_browser
def test_files_are_compressed_once_by_content_and_requests_send_the_stored_bytes(tmp_path, monkeypatch):
    import brotli

    from orchestrator.measure.targets.server import StaticServer, compressed_size, precompress, store

    monkeypatch.setenv("ORCHESTRATOR_HOME", str(tmp_path / "home"))  # a private store of compressed files
    calls = _spy_compressor(monkeypatch)
    model, twin = tmp_path / "m.onnx", tmp_path / "twin.onnx"
    model.write_bytes(b"weights " * 20000)
    twin.write_bytes(model.read_bytes())  # the same bytes under another name (an export equal to its parent)
    precompress([model])
    assert sorted(c[:2] for c in calls) == [("m.onnx", "br"), ("m.onnx", "gzip")]
    precompress([model, twin])
    assert len(calls) == 2 and len(list(store().iterdir())) == 2  # found by content: nothing compressed again
    server = StaticServer()
    server.add("/models/m.onnx", model)
    try:
        conn = http.client.HTTPConnection(*server.httpd.server_address, timeout=10)
        conn.request("GET", "/models/m.onnx", headers={"Accept-Encoding": "gzip, deflate, br"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        server.close()
    assert resp.getheader("Content-Encoding") == "br" and brotli.decompress(body) == model.read_bytes()
    assert len(body) == compressed_size(model, "br") and len(calls) == 2  # the request compressed nothing
    model.write_bytes(b"other weights " * 20000)  # new content: compressed anew
    precompress([model])
    assert len(calls) == 4


@needs_browser
def test_a_measurement_fetches_bytes_compressed_before_timing(digits, digits_onnx, tmp_path, monkeypatch):
    import onnx

    model = onnx.load(str(digits_onnx))
    model.doc_string = str(uuid.uuid4())  # bytes no earlier run has compressed (the store is kept by content)
    path = tmp_path / "unique.onnx"
    onnx.save(model, str(path))
    calls = _spy_compressor(monkeypatch)
    first = BrowserTarget().measure(path, digits, settings())
    ours = [(enc, main) for name, enc, main in calls if name == path.name]
    assert sorted(ours) == [("br", True), ("gzip", True)]  # made while preparing, none inside the timed request
    second = BrowserTarget().measure(path, digits, settings())
    assert len([c for c in calls if c[0] == path.name]) == 2  # the second measurement reuses them
    assert first["browser_download_br_mb"] == second["browser_download_br_mb"] > 0
    assert second["browser_max_abs_diff"] < 1e-4


@needs_browser
@needs_node
@pytest.mark.slow
def test_every_node_run_has_browser_and_node_metrics(store):
    before = headless_chromium_pids()
    out = run_cli(store, "+recipe=int4", "eval.targets=[ort,browser,node]", "eval.samples=100", "report.target=browser")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "web p50 ms" in out.stdout and "use the browser's numbers" in out.stdout
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("int4")
    kids = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert kids
    for run in kids:
        m = run.data.metrics
        for key in ("browser_download_mb", "browser_download_gzip_mb", "browser_download_br_mb", "browser_load_ms",
                    "browser_first_inference_ms", "browser_latency_p50_ms", "browser_latency_p95_ms",
                    "browser_latency_cv", "browser_memory_mb", "browser_accuracy", "browser_max_abs_diff",
                    "node_latency_p50_ms", "node_accuracy", "node_max_abs_diff"):
            assert key in m, (run.info.run_name, key)
        # the browser's accuracy equals Python's on the same subset within one sample
        assert abs(m["browser_accuracy"] - m["browser_ref_accuracy"]) <= 1 / 100 + 1e-9
        assert run.data.tags["orchestrator.browser.onnxruntime_web"] == "1.30.0"
    assert not headless_chromium_pids() - before  # the sweep tore its browser down


@needs_browser
def test_a_split_model_loads_in_the_browser_from_its_shards(digits, digits_onnx, tmp_path):
    import onnx

    from orchestrator.artifacts.onnx_utils import model_files
    from orchestrator.stages.base import StageContext
    from orchestrator.stages.split import Split, SplitParams

    largest = max(len(t.raw_data) for t in onnx.load(str(digits_onnx)).graph.initializer) / 1e6
    ctx = StageContext(task=digits, work_dir=tmp_path, seed=0, teacher=lambda: None)
    split = Path(Split(SplitParams(shard_mb=largest * 1.1, min_tensor_kb=0.1)).run(ctx, digits_onnx).model)
    shards = model_files(split)[1:]
    assert len(shards) >= 2
    m = BrowserTarget().measure(split, digits, settings())
    assert m["browser_max_abs_diff"] < 1e-4  # onnxruntime-web read every weight from the shards
    served = {url.rsplit("-", 1)[-1] for url, _, _ in _Session.get("").server.served if "/models/" in url}
    assert {f.name for f in shards} <= served
    if shutil.which("node") and ORT_NODE.exists():  # onnxruntime-node finds the shards next to the graph
        assert NodeTarget().measure(split, digits, settings())["node_max_abs_diff"] < 1e-4
