"""The Ray executor (`executor=ray`): every DAG node is a Ray task on a cluster.

The whole DAG is submitted at once, each child with its parent's result reference as an argument, so
Ray itself orders them and runs independent branches in parallel wherever the cluster has room. A
node asks for its stage's `stages.<name>.resources`. A worker that dies is retried by Ray
(`executor.max_retries`), then the node is reported failed with the reason. The skip rule is the shared
`orchestrator.engine.executors.base.release`: a failed or gated node's descendants are reported skipped (and their
tasks cancelled, or they return at once on seeing the parent's status). Results flow back to this
process, which does all tracking: workers never talk to MLflow. Workers reach the cache through
`job.cache_dir`, which must be a folder every node of the cluster sees (a shared filesystem).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.config.executor import ExecutorConfig, Resources
from orchestrator.engine.executors.base import BLOCKING, FAILED, SKIPPED, Executor, Job, NodeResult, release
from orchestrator.engine.plan import Node, Plan
from orchestrator.errors import ConfigError

# passed to every worker through the job's runtime_env, so remote workers load plugins and stay offline
WORKER_ENV = ("ORCHESTRATOR_PLUGINS", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
              "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION")  # (credentials: the workers' own)
POLL_S = 0.5  # how often the driver collects start events and finished nodes


class RayExecutor(Executor):
    """Nodes as Ray tasks on the cluster at `executor.address` (or a local Ray started for this sweep)."""

    def __init__(self, cfg: ExecutorConfig) -> None:
        super().__init__(cfg.workers)
        self.cfg = cfg
        self.started_here = False

    def prepare(self, needs: dict[str, Resources]) -> None:
        """Join (or start) the cluster and check that some node can serve each stage's request."""
        try:
            import ray
        except ImportError:
            raise ConfigError("executor", "ray", 'Ray is not installed: pip install -e ".[ray]"') from None
        if not ray.is_initialized():
            _connect(self.cfg)
            self.started_here = True
        _check_fit(needs, ray.nodes())

    def run(self, plan: Plan, make_job: Callable[[Node], Job], on_start: Callable[..., None],
            on_result: Callable[[Node, NodeResult], None],
            compute_fn: Callable[[Job], NodeResult]) -> dict[str, NodeResult]:
        import ray
        from ray.util.queue import Queue

        if not ray.is_initialized():
            self.prepare({})
        board = Queue()  # workers post (key, where) when a node starts: the driver's progress shows it
        remote = ray.remote(_on_worker)
        refs: dict[str, Any] = {}
        for node in _parents_first(plan):
            job = make_job(node)
            res = getattr(job, "resources", None) or Resources()
            refs[node.key] = remote.options(
                **res.ray_options(), max_retries=self.cfg.max_retries, retry_exceptions=False,
                scheduling_strategy="SPREAD", name=f"{node.stage}:{node.key[:10]}",
            ).remote(compute_fn, job, refs.get(node.parent), board)
        try:
            return self._collect(plan, refs, board, on_start, on_result)
        finally:
            with contextlib.suppress(Exception):
                ray.kill(board.actor)

    def _collect(self, plan: Plan, refs: dict[str, Any], board: Any, on_start: Callable[..., None],
                 on_result: Callable[[Node, NodeResult], None]) -> dict[str, NodeResult]:
        """Report starts and results as they land until every node has one."""
        import ray

        results: dict[str, NodeResult] = {}
        node_of = {ref: plan.nodes[key] for key, ref in refs.items()}
        pending = set(node_of)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S)
            starts = _starts(board)  # taken before the results: a child may start once its parent landed
            for ref in sorted(done, key=lambda r: len(node_of[r].steps)):  # parents before children
                pending.discard(ref)
                node = node_of[ref]
                if node.key in results:  # already reported skipped: an ancestor failed or was gated
                    continue
                results[node.key] = _result(ref, node, self.cfg.max_retries)
                on_result(node, results[node.key])
                release(plan, node, results, on_result)
                if results[node.key].status in BLOCKING:
                    for child in plan.descendants(node.key):
                        pending.discard(refs[child.key])
                        with contextlib.suppress(Exception):
                            ray.cancel(refs[child.key])
            for key, where in starts:
                if key not in results:  # (a node that started and finished within one poll shows its result only)
                    on_start(plan.nodes[key], where)
        return results

    def close(self) -> None:
        """Stop the Ray this sweep started or joined (the cluster itself keeps running)."""
        if self.started_here:
            import ray

            ray.shutdown()
            self.started_here = False


def _on_worker(compute_fn: Callable[[Job], NodeResult], job: Job, parent: NodeResult | None,
               board: Any) -> NodeResult:
    """One node on a Ray worker. `parent` is the parent's result (Ray waited for it): a blocked parent
    means this node is skipped without computing (the driver reports the skip)."""
    if parent is not None and parent.status in BLOCKING:
        return NodeResult(job.node.key, SKIPPED, error=f"ancestor {parent.key} {parent.status}")
    where = _where()
    with contextlib.suppress(Exception):  # progress only: a lost start event must not fail the node
        board.put_nowait((job.node.key, where))
    result = compute_fn(job)
    result.worker = where
    return result


def _where() -> str:
    """This worker, as a person reads it: the Ray node's address and id, and the process."""
    import ray

    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]} pid {os.getpid()}"


def _starts(board: Any) -> list[tuple[str, str]]:
    """The (key, worker) start events posted since the last poll."""
    with contextlib.suppress(Exception):
        size = board.qsize()
        return board.get_nowait_batch(size) if size else []
    return []


def _result(ref: Any, node: Node, retries: int) -> NodeResult:
    """The node's result, or a failure that says what happened to its worker."""
    import ray
    from ray import exceptions as rex

    try:
        return ray.get(ref)
    except rex.OutOfMemoryError as err:
        why = f"Ray's memory monitor killed the worker computing {node.stage} (the node ran out of memory): {err}"
    except rex.WorkerCrashedError:
        why = (f"the worker process computing {node.stage} died {retries + 1} times (killed by a signal, e.g. the "
               "kernel's out-of-memory killer); its siblings went on")
    except rex.NodeDiedError as err:
        why = f"the Ray node computing {node.stage} died: {err}"
    except rex.TaskCancelledError:
        why = f"the Ray task computing {node.stage} was cancelled"
    except rex.RayError as err:
        why = f"Ray could not compute {node.stage}: {type(err).__name__}: {err}"
    return NodeResult(node.key, FAILED, error=why)


def _parents_first(plan: Plan) -> list[Node]:
    out, stack = [], plan.children(None)[::-1]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(plan.children(node.key)[::-1])
    return out


def _connect(cfg: ExecutorConfig) -> None:
    """ray.init: join `cfg.address` (probed first: Ray itself waits minutes on an unreachable address), or
    start a local Ray with `cfg.num_cpus` CPUs. Plugins and offline settings travel in the runtime_env."""
    import ray

    from orchestrator.config.plugins import modules

    env: dict[str, Any] = {"env_vars": {k: os.environ[k] for k in WORKER_ENV if os.environ.get(k)}}
    plugin_modules = modules()
    if plugin_modules:
        env["py_modules"] = plugin_modules
    quiet = {"log_to_driver": False, "logging_level": "warning"}
    if cfg.address is None:
        ray.init(num_cpus=cfg.num_cpus or os.cpu_count() or 1, include_dashboard=False, runtime_env=env, **quiet)
        return
    address = _probe(cfg.address)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # a refusal is one line below, not a screen of retries
    try:
        ray.init(address=address, runtime_env=env, **quiet)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise ConfigError("executor.address", cfg.address, f"Ray refused to connect ({type(err).__name__}: "
                          f"{first[:300]}){_auth_hint(err)}") from None


def _auth_hint(err: Exception) -> str:
    """What to do when the refusal may be Ray's token authentication, else nothing.

    Ray does not say so in the exception (only its C++ log prints "Unauthenticated"): a driver without the
    cluster's token gets a bare ConnectionError after retrying. `ray start --head` turns token authentication
    on by default once ~/.ray/auth_token exists on the head machine, so a user who once ran Ray meets this.
    """
    text = f"{type(err).__name__} {err}".lower()
    if not any(w in text for w in ("connection", "authenticat", "token")):
        return ""
    mode = os.environ.get("RAY_AUTH_MODE")
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    have = ("RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else
            path if path and Path(path).is_file() else "")
    state = f"now RAY_AUTH_MODE={mode or 'unset'}" + (f" with the token from {have}" if have else ", no token")
    return ("; if the cluster uses token authentication (Ray's default once ~/.ray/auth_token exists where "
            f"`ray start --head` ran; {state}): set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<a copy of the "
            "head machine's ~/.ray/auth_token> (or RAY_AUTH_TOKEN=<its content>; `ray get-auth-token` prints it "
            "there)")


def _probe(address: str) -> str:
    """The address to pass to ray.init, after a TCP probe with a short timeout (ConfigError if down)."""
    from ray._private.services import canonicalize_bootstrap_address

    client = address.startswith("ray://")
    if client:
        target = address[len("ray://"):]
    else:
        try:
            target = canonicalize_bootstrap_address(address)
        except Exception:
            target = None
        if target is None:
            raise ConfigError("executor.address", address, "no running Ray cluster found on this machine: start "
                              "one with `ray start --head`, give its host:port, or leave executor.address "
                              "unset to start a local Ray")
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
            pass
    except (OSError, ValueError) as err:
        raise ConfigError("executor.address", address, f"nothing answers at {target} ({err}): start the cluster "
                          "(`ray start --head`) or fix the address") from None
    return address if client else target


def _check_fit(needs: dict[str, Resources], nodes: list[dict[str, Any]]) -> None:
    """Every stage's request must fit on one alive node, or its tasks would wait forever."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    for stage, res in sorted(needs.items()):
        want = {"CPU": res.num_cpus, "GPU": res.num_gpus, "memory": res.memory_gb * 2**30}
        if any(all(have.get(k, 0.0) >= v for k, v in want.items() if v) for have in alive):
            continue
        most = {k: max((h.get(k, 0.0) for h in alive), default=0.0) for k in want}
        raise ConfigError(f"stages.{stage}.resources", {k: v for k, v in vars(res).items()},
                          f"no node of the Ray cluster has that much (the largest has {most['CPU']:g} CPUs, "
                          f"{most['GPU']:g} GPUs, {most['memory'] / 2**30:.1f} GB memory)")
