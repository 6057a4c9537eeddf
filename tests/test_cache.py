"""The content-addressed store: nothing is visible until committed whole; orphans of dead writers are swept."""

from __future__ import annotations

import multiprocessing
import os
import time

from orchestrator.engine.cache import Cache


def test_commit_is_all_or_nothing(tmp_path):
    cache = Cache(tmp_path)
    staged = cache.staging("k1")
    (staged / "model.onnx").write_bytes(b"x" * 10)
    assert not cache.has("k1") and not cache.path("k1").exists()
    cache.commit("k1", staged, {"model_file": "model.onnx", "stage_metrics": {}})
    assert cache.has("k1") and cache.model_path("k1").read_bytes() == b"x" * 10
    assert not staged.exists()


def test_second_commit_of_same_key_keeps_the_first(tmp_path):
    cache = Cache(tmp_path)
    for payload in (b"first", b"second"):
        staged = cache.staging("k")
        (staged / "m.onnx").write_bytes(payload)
        cache.commit("k", staged, {"model_file": "m.onnx"})
    assert cache.model_path("k").read_bytes() == b"first"
    assert not any((tmp_path / "tmp").iterdir())


def test_orphaned_staging_of_a_dead_process_is_swept(tmp_path):
    proc = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    proc.start()
    proc.join()  # a pid that is certainly dead now
    dead = tmp_path / "tmp" / f"k.{proc.pid}.abcd1234"
    dead.mkdir(parents=True)
    alive = tmp_path / "tmp" / f"k.{os.getpid()}.abcd1234"
    alive.mkdir()
    Cache(tmp_path)
    assert not dead.exists() and alive.exists()


def _hold_lock(root: str, key: str, seconds: float, started) -> None:
    cache = Cache(root, sweep=False)
    with cache.lock(key):
        started.set()
        time.sleep(seconds)


def test_lock_excludes_other_processes(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), "k", 1.0, started))
    holder.start()
    assert started.wait(30)
    begin = time.perf_counter()
    with Cache(tmp_path, sweep=False).lock("k"):
        waited = time.perf_counter() - begin
    holder.join()
    assert waited > 0.5


def test_eval_measurements_are_keyed_by_settings(tmp_path):
    cache = Cache(tmp_path)
    staged = cache.staging("k")
    cache.put_eval("k", "h1", {"accuracy": 0.9}, staged)
    cache.commit("k", staged, {"model_file": "m.onnx"})
    assert cache.eval_metrics("k", "h1") == {"accuracy": 0.9}
    assert cache.eval_metrics("k", "h2") is None
