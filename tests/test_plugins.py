"""A task defined outside the package (examples/wine_task.py) runs with no project file edited."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

EXAMPLES = ROOT / "examples"


def run(tmp_path, *args, env=None):
    # the checkout under test first (cwd is tmp_path, where an installed copy would win), then the example
    env = {**os.environ, "ORCHESTRATOR_PLUGINS": "wine_task", "PYTHONPATH": os.pathsep.join((str(ROOT), str(EXAMPLES))),
           "ORCHESTRATOR_CONFIG_PATH": str(EXAMPLES / "conf"), **(env or {})}
    cmd = [sys.executable, "-m", "orchestrator", "+recipe=pkdq", "task=wine", f"cache.dir={tmp_path / 'cache'}",
           f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifact_root={tmp_path / 'art'}",
           "eval.repeats=20", "eval.warmup=2", "stages.distill.epochs=2", "task.epochs=30", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "pool"])
def test_user_task_runs_with_every_executor(tmp_path, executor):
    out = run(tmp_path, f"executor={executor}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "11 unique nodes: 11 stage executions" in out.stdout and " 0 failed" in out.stdout


def test_user_task_params_are_validated_like_built_ins(tmp_path):
    out = run(tmp_path, "task.hidden=abc", "dry_run=true")
    assert out.returncode == 2 and "task.hidden='abc' is not allowed: must be of type int" in out.stderr
    out = run(tmp_path, "task.hiden=8", "dry_run=true")
    assert out.returncode == 2
    assert "task.hiden='8' is not allowed: unknown key 'hiden' under task; allowed there: name, hidden" in out.stderr


def test_a_plugin_that_clashes_with_a_built_in_is_refused(tmp_path):
    (tmp_path / "clash.py").write_text(
        "from orchestrator.tasks.digits import DigitsParams\nfrom orchestrator.tasks.base import Task\n\n"
        "class Mine(Task):\n    name = 'digits'\n    Params = DigitsParams\n")
    out = run(tmp_path, "dry_run=true", env={"ORCHESTRATOR_PLUGINS": "clash"})
    assert out.returncode == 2, out.stderr
    assert "plugin task 'digits' (clash:Mine) clashes with the built-in task 'digits' " \
           "(orchestrator.tasks.digits:Digits)" in out.stderr and "Traceback" not in out.stderr


def test_a_missing_plugin_module_is_named(tmp_path):
    out = run(tmp_path, "dry_run=true", env={"ORCHESTRATOR_PLUGINS": "no_such_module"})
    assert out.returncode == 2 and "module 'no_such_module' cannot be imported" in out.stderr


def test_a_plugin_task_without_a_required_method_is_refused_when_loaded(tmp_path):
    """A task written before `architecture(spec)` became required: refused before its baseline trains."""
    (tmp_path / "old_task.py").write_text(
        "from orchestrator.tasks.base import Task\nfrom wine_task import WineParams\n\n"
        "class Old(Task):\n    name = 'old'\n    Params = WineParams\n\n"
        "    def build_baseline(self):\n        raise AssertionError('must not train')\n")
    out = run(tmp_path, env={"ORCHESTRATOR_PLUGINS": "old_task"})
    assert out.returncode == 2, out.stderr
    assert "plugin task 'old' (old_task:Old) does not define batches(split, batch_size, shuffle=False), " \
           "architecture(spec), which every task must" in out.stderr
    assert "Traceback" not in out.stderr and "must not train" not in out.stderr


def test_bad_input_found_inside_a_node_is_one_line_and_exit_2(tmp_path):
    """A ConfigError only the node can raise (here: on loading) is reported like a refusal before compute."""
    (tmp_path / "refuser.py").write_text(
        "from dataclasses import dataclass\n\nfrom wine_task import Wine, WineParams\n\n"
        "from orchestrator.errors import ConfigError\n\n\n@dataclass\nclass RefuserParams(WineParams):\n"
        "    name: str = 'refuser'\n\n\nclass Refuser(Wine):\n    name = 'refuser'\n    Params = RefuserParams\n\n"
        "    def build_baseline(self):\n"
        "        raise ConfigError('task.hidden', self.params.hidden, 'is wider than this data allows')\n")
    out = run(tmp_path, "task.name=refuser", "tracking=none", env={"ORCHESTRATOR_PLUGINS": "refuser"})
    assert out.returncode == 2, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: task.hidden=64 is not allowed: is wider than this data allows"], out.stderr
    assert "Traceback" not in out.stdout + out.stderr and "1 failed" in out.stdout
