"""Walking the DAG: reuse cached nodes, compute the rest, isolate failures to their subtree.

`compute` builds and measures one node entirely through the cache, so it runs the same in this process
or in a worker process. `execute` hands the DAG to an executor (orchestrator/engine/executors/), which schedules
nodes parent-first and reports each result as it lands; the contract between the two (`Job`, `NodeResult`,
the statuses and `release`, the skip rule) lives in orchestrator.engine.executors.base.
"""

from __future__ import annotations

import errno
import functools
import json
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator import faults
from orchestrator.artifacts import torch_io
from orchestrator.artifacts.onnx_utils import same_bytes
from orchestrator.engine.cache import Cache, open_cache
from orchestrator.engine.executors.base import CACHED, DONE, FAILED, GATED, Job, NodeResult
from orchestrator.engine.plan import BASELINE, Node, Plan
from orchestrator.errors import ConfigError
from orchestrator.measure import targets
from orchestrator.measure.evaluate import eval_hash, onnx_for


@functools.lru_cache(maxsize=4)
def _task(task_json: str, seed: int) -> Any:
    """One task object per process and config (datasets and tokenizers load once)."""
    from orchestrator.tasks import TASKS

    params = json.loads(task_json)
    cls = TASKS[params["name"]]
    return cls(cls.Params(**params), seed)


def _torch_threads(n: int) -> None:
    """Set torch's intra-op thread count for this process (executor.torch_threads)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _load(cache: Cache, key: str, task: Any) -> Any:
    """A cached node's model: a torch module (rebuilt from safetensors + JSON, never unpickled), or its ONNX path."""
    path = cache.model_path(key)
    if path.suffix == ".safetensors":
        from orchestrator.artifacts import torch_io

        return torch_io.load(path, task)
    return path


def _save(model: Any, folder: Path, task: Any) -> str:
    """Store a stage's output model in the staging folder; returns its file name there."""
    if isinstance(model, (str, Path)):
        src = Path(model)
        if src.parent.resolve() != folder.resolve():
            shutil.copy(src, folder / f"model{src.suffix or '.onnx'}")
            return f"model{src.suffix or '.onnx'}"
        return src.name
    from orchestrator.artifacts import torch_io

    return torch_io.save(model, folder, task)


def _load_ancestor(cache: Cache, key: str | None, task: Any, name: str) -> Any:
    """The model of the nearest node from `key` up whose stage is written `name` (`baseline`: the root)."""
    from orchestrator.stages import written_name

    while key:
        meta = cache.meta(key)
        if name in (meta["stage"], written_name(meta["stage"])):
            return _load(cache, key, task)
        key = meta["parent"]
    raise LookupError(f"no earlier step {name!r} in this node's chain")


def _run_stage(job: Job, cache: Cache, task: Any, folder: Path) -> tuple[Any, dict[str, float]]:
    """Produce the node's model: train the baseline, or apply its stage to the parent's model."""
    if job.node.stage == BASELINE:
        return task.build_baseline(), {}
    from orchestrator.stages import REGISTRY, StageContext

    cls = REGISTRY[job.node.stage]
    teacher = functools.cache(lambda: _load(cache, job.root_key, task))
    ctx = StageContext(task=task, work_dir=folder, seed=job.seed, teacher=teacher,
                       load=functools.partial(_load_ancestor, cache, job.node.parent, task))
    out = cls(cls.Params(**job.node.params)).run(ctx, _load(cache, job.node.parent, task))
    return out.model, dict(out.metrics)


def _measure(job: Job, cache: Cache, task: Any, folder: Path, model_file: str) -> dict[str, float]:
    """Measure the model in `folder`; torch models are exported first (kept as measured.onnx), other formats
    (a GGUF) are measured by the target that owns them (targets.measuring), under the same metric names.

    Agreement is against the root baseline's measured ONNX (measured first: parents run before children).
    """
    path = folder / model_file
    domain = targets.format_of(path)
    same = _parent_measured_same(job, cache, path) if domain == "onnx" else None
    if same is not None:
        return same
    reference = None if job.node.key == job.root_key else _measured_path(cache, job.root_key)
    measured = onnx_for(task, domain, path, folder, job.export) if domain in ("torch", "onnx") else path
    metrics = targets.measuring(domain).measure(measured, task, job.settings, reference)
    if domain == "torch":
        metrics["params"] = float(torch_io.param_count(path))
    return metrics


def _parent_measured_same(job: Job, cache: Cache, path: Path) -> dict[str, float] | None:
    """The parent's measurements when `path` holds the very bytes the parent was measured on (an `export`
    right below a torch node writes the file the parent's measurement exported): measuring it again would
    only repeat the numbers, at minutes a transformer. None when anything differs."""
    parent = job.node.parent
    if parent is None or not cache.has(parent):
        return None
    measured = cache.path(parent) / "measured.onnx"
    found = cache.eval_metrics(parent, eval_hash(job.settings)) if measured.exists() else None
    if found is None or not same_bytes(measured, path):
        return None
    from orchestrator.artifacts.onnx_utils import onnx_param_count  # (onnx: not imported on a cache hit)

    return {**found, "params": float(onnx_param_count(path))}  # the ONNX's count, as measuring it would give


def _build(job: Job, cache: Cache, task: Any) -> None:
    """Compute, measure and commit one node atomically."""
    staged = cache.staging(job.node.key)
    try:
        start = time.perf_counter()
        faults.point("build:start")
        model, stage_metrics = _run_stage(job, cache, task, staged)
        model_file = _save(model, staged, task)
        faults.point("build:saved")
        seconds, start = time.perf_counter() - start, time.perf_counter()
        cache.put_eval(job.node.key, eval_hash(job.settings), _measure(job, cache, task, staged, model_file), staged)
        cache.commit(job.node.key, staged, {  # the timings feed later sweeps' estimates (orchestrator.report.progress)
            "key": job.node.key, "stage": job.node.stage, "params": job.node.params,
            "parent": job.node.parent, "steps": list(job.node.steps), "model_file": model_file,
            "stage_metrics": stage_metrics, "stage_seconds": seconds,
            "measure_seconds": time.perf_counter() - start, "created": time.time()})
    except BaseException:
        cache.discard(staged)
        raise


def _measured_path(cache: Cache, key: str) -> Path:
    folder = cache.path(key)
    measured = folder / "measured.onnx"
    return measured if measured.exists() else cache.model_path(key)


def compute(job: Job) -> NodeResult:
    """Make sure node `job.node` is in the cache and measured; never raises for a stage failure."""
    start = time.perf_counter()
    key = job.node.key
    try:
        from orchestrator.config.plugins import install

        install()  # a pool worker finds the user's tasks and stages the way the CLI did
        cache = open_cache(job.cache_dir, sweep=False)
        task = _task(json.dumps(job.task, sort_keys=True), job.seed)
        executed = _ensure_built(job, cache, task)
        ehash = eval_hash(job.settings)
        metrics = {**cache.meta(key)["stage_metrics"], **_ensure_measured(job, cache, task, ehash)}
        gated = _gated(job, cache, ehash, metrics, task)
        more, target_errors = _other_targets(job, cache, task)
        return NodeResult(key, GATED if gated else DONE if executed else CACHED, {**metrics, **more},
                          time.perf_counter() - start, error=gated, onnx_path=str(_measured_path(cache, key)),
                          executed=executed, target_errors=target_errors)
    except ConfigError as err:  # the user's input, not a bug: one line, no traceback
        return NodeResult(key, FAILED, seconds=time.perf_counter() - start, error=str(err), refused=str(err))
    except Exception as err:
        return NodeResult(key, FAILED, seconds=time.perf_counter() - start,
                          error=_why_failed(job, err) + traceback.format_exc())


def _ensure_built(job: Job, cache: Cache, task: Any) -> bool:
    """Build and commit the node unless the cache has it; True when it was built here."""
    key = job.node.key
    if cache.has(key):
        return False
    _refused(cache, key)
    with cache.lock(key):
        if cache.has(key):  # another process committed it while this one waited for the lock
            return False
        _torch_threads(job.torch_threads)  # only when computing: a cache hit never imports torch
        _build(job, cache, task)
        faults.point("commit:done")
        return True


def _ensure_measured(job: Job, cache: Cache, task: Any, ehash: str) -> dict[str, float]:
    """The node's measurements under `ehash`; a cached artifact with new measurement settings is re-measured only."""
    key = job.node.key
    metrics = cache.eval_metrics(key, ehash)
    if metrics is None:
        with cache.lock(key):
            metrics = _measure(job, cache, task, cache.path(key), cache.meta(key)["model_file"])
            cache.put_eval(key, ehash, metrics)
    return metrics


OOM_TEXT = ("can't allocate memory", "not enough memory", "out of memory", "Cannot allocate memory")


def _why_failed(job: Job, err: Exception) -> str:
    """A first line that names the kind of failure a person can act on (memory, disk), else nothing."""
    if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and any(t in str(err) for t in OOM_TEXT)):
        return (f"out of memory in {job.node.stage}: this node failed, its siblings go on (lower the stage's "
                "batch_size, or free memory)\n")
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return (f"no space left on the device of cache.dir={job.cache_dir} while computing {job.node.stage}: "
                "free space and rerun (finished nodes are kept)\n")
    return ""


def _other_targets(job: Job, cache: Cache, task: Any) -> tuple[dict[str, float], dict[str, str]]:
    """Measurements on every other target the registry has for this node (eval.targets, and those a task family
    provides, e.g. speculative decoding), cached per target; a target's failure is reported, not fatal."""
    root = job.node.key == job.root_key
    measured = _measured_path(cache, job.node.key)
    node = targets.Subject(job.node.key, measured, targets.format_of(measured), None if root else job.root_key,
                           None if root else _measured_path(cache, job.root_key))
    if not targets.for_node(job.settings, task, node):
        return {}, {}
    with cache.lock(job.node.key):
        return targets.measure_extra(cache, node, task, job.settings)


def _refused(cache: Cache, key: str) -> None:
    """Say so when a folder for `key` exists but is not usable (e.g. a planted pickle): it is rebuilt."""
    reason = cache.problem(key)
    if reason not in (None, "absent"):
        print(f"warning: cache node {key} refused ({reason}); rebuilding it", file=sys.stderr, flush=True)


def _gated(job: Job, cache: Cache, ehash: str, metrics: dict[str, float], task: Any) -> str | None:
    """Why the node falls below the quality gate (vs its root baseline), or None if it passes.

    gate.max_loss bounds the task's loss against the baseline (its Quality: points of drop, or a ratio).
    """
    limit = job.max_loss
    if job.node.key == job.root_key or limit is None:
        return None
    quality = task.quality
    base = cache.eval_metrics(job.root_key, ehash) or {}
    loss = quality.loss_of(metrics, base)
    if loss is None or not quality.exceeds(loss, limit):
        return None
    return (f"gated: {quality.metric} {quality.fmt.format(metrics[quality.metric])} is {quality.describe_loss(loss)} "
            f"{quality.fmt.format(base[quality.metric])}, more than gate.max_loss={limit:g} "
            f"({quality.limit_words()}); its descendants are skipped")


def execute(plan: Plan, make_job: Callable[[Node], Job], on_start: Callable[..., None],
            on_result: Callable[[Node, NodeResult], None], workers: int = 1,
            compute_fn: Callable[[Job], NodeResult] = compute, executor: Any = None) -> dict[str, NodeResult]:
    """Run every node of `plan`; a failed or gated node's descendants are reported SKIPPED, the rest go on.

    `executor` schedules the nodes (orchestrator.engine.executors); None = local, or the pool for `workers` > 1.
    `compute_fn` is the per-node work (tests swap it to exercise scheduling alone).
    """
    from orchestrator.engine.executors import executor_for

    chosen = executor or executor_for(workers)
    return chosen.run(plan, make_job, on_start, on_result, compute_fn)

