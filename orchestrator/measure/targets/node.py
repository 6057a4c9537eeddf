"""`node`: onnxruntime-node (CPU execution provider) in a Node.js child process.

What a Node service or an Electron app would run. Metrics (prefixed `node_`): `node_load_ms` (session
create from the file), `node_first_inference_ms`, `node_latency_p50_ms` / `p95` / `cv` at batch 1,
`node_memory_mb` (the process's RSS after load and the first inference), `node_accuracy` on the first
`eval.samples` test examples and `node_max_abs_diff` against ONNX Runtime in Python on the same inputs.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError, check_range
from orchestrator.measure.targets import sample
from orchestrator.measure.targets.base import Target, TargetError

HERE = Path(__file__).resolve().parent
ORT_NODE = HERE / "browser" / "node_modules" / "onnxruntime-node"
HARNESS = HERE / "node_harness.mjs"


@functools.cache
def node_version() -> str:
    """`v20.20.2`, or '' without Node.js."""
    exe = shutil.which("node")
    return subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip() if exe else ""


@dataclass
class NodeConfig:
    """`eval.node`: onnxruntime-node intra-op threads, and how long one measurement may take."""

    threads: int = 1
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        check_range("threads", self.threads, 1, 256)
        check_range("timeout_s", self.timeout_s, 1.0, 86400.0)


class NodeTarget(Target):
    """onnxruntime-node with `eval.node.threads` intra-op threads."""

    name = "node"
    title = "Node.js (onnxruntime-node)"
    where = "in Node.js"
    Settings = NodeConfig
    columns = (("node_latency_p50_ms", "node p50 ms", "{:.4g}"), ("node_max_abs_diff", "node diff", "{:.2g}"))

    def check(self, settings: Any) -> None:
        problems = [p for p, bad in (("Node.js (node on PATH)", not node_version()),
                                     ("onnxruntime-node", not (ORT_NODE / "package.json").is_file())) if bad]
        if problems:
            raise ConfigError("eval.targets", list(settings.targets),
                              f"the node target needs {' and '.join(problems)}. Install: apt-get install nodejs, "
                              "then npm ci --prefix orchestrator/measure/targets/browser")

    def check_task(self, task_cls: type, settings: Any) -> None:
        sample.check_plain_inputs(task_cls, settings)

    def key_data(self, settings: Any) -> dict[str, Any]:
        version = json.loads((ORT_NODE / "package.json").read_text())["version"]
        own = settings.block(self.name)
        return {"node": node_version(), "onnxruntime-node": version, "threads": own.get("threads", 1),
                "warmup": settings.warmup, "repeats": settings.repeats, "samples": settings.samples, "harness": "1"}

    def tags(self, settings: Any) -> dict[str, str]:
        return {"orchestrator.node.version": node_version(),
                "orchestrator.node.onnxruntime_node": str(self.key_data(settings)["onnxruntime-node"])}

    def measure(self, model: Path, task: Any, settings: Any, reference: Path | None = None) -> dict[str, float]:
        own = settings.block(self.name)
        feeds, labels = sample.subset(task, settings.samples)
        ref = sample.reference(model, feeds)
        request = {"model": str(model), "threads": int(own.get("threads", 1)), "warmup": settings.warmup,
                   "repeats": settings.repeats, "samples": [sample.encode(f) for f in feeds]}
        try:
            proc = subprocess.run(["node", str(HARNESS)], input=json.dumps(request), capture_output=True, text=True,
                                  timeout=float(own.get("timeout_s", 600)),
                                  env={"PATH": _path(), "ORCHESTRATOR_ORT_NODE": str(ORT_NODE)})
        except subprocess.TimeoutExpired:
            raise TargetError(f"onnxruntime-node did not finish within eval.node.timeout_s="
                              f"{own.get('timeout_s', 600)}") from None
        if proc.returncode != 0:
            lines = (proc.stderr.strip() or f"exit {proc.returncode}").splitlines()
            raise TargetError(f"onnxruntime-node failed: {next((ln for ln in lines if 'Error' in ln), lines[-1])}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        metrics = {"node_load_ms": out["load_ms"], "node_first_inference_ms": out["first_ms"],
                   "node_memory_mb": out["rss"] / 1e6}
        metrics.update(sample.latency("node", out["times"]))
        metrics.update(sample.quality("node", out["logits"], ref, labels))
        return metrics


def _path() -> str:
    import os

    return os.environ.get("PATH", "/usr/bin:/bin")
