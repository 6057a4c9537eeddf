"""Named kill points for the fault-injection tests: `ORCHESTRATOR_FAULT=<point>:<n>` SIGKILLs the process
the n-th time it reaches `point`.

A SIGKILL cannot be caught, so it is the honest model of a power cut, the OOM killer or `kill -9`:
the tests kill a sweep at every phase (training, a stage, export, measurement, cache commit, MLflow
logging, the report), rerun it, and check that nothing half-written is ever read and nothing is lost.
Unset (always, outside those tests), `point` is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "ORCHESTRATOR_FAULT"
POINTS = ("train_epoch", "build:start", "build:saved", "export:written", "measure:mid", "commit:meta",
          "commit:done", "log:open", "log:closed", "report")
_seen: dict[str, int] = {}


def point(name: str) -> None:
    """Count one pass through `name`; die here if $ORCHESTRATOR_FAULT names this pass."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, _, nth = wanted.rpartition(":")
    if target != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
