"""Node keys of every built-in recipe on every built-in task, held against a golden file.

A key names a cached artifact; a change that moves one (a refactor, a renamed module, a reordered dict)
silently throws every user's cache away. The golden file was written before the package was restructured.
When a key SHOULD change (a stage's version bumped, a pin moved), regenerate it on purpose:
`ORCHESTRATOR_REGEN_GOLDEN=1 pytest tests/test_golden_keys.py` and say why in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import compose

GOLDEN = Path(__file__).parent / "golden_keys.json"
TASK_NAMES = ("digits", "tinylm", "smollm2", "tweets")  # hf and lm need a user's model path


def _keys() -> dict[str, list[str] | str]:
    from orchestrator.config.schema import discover_recipes
    from orchestrator.engine.plan import plan
    from orchestrator.errors import ConfigError, PlanError
    from orchestrator.stages import REGISTRY
    from orchestrator.tasks import TASKS

    out: dict[str, list[str] | str] = {}
    for recipe in sorted(discover_recipes()):
        for task in ("", *TASK_NAMES):
            overrides = [f"+recipe={recipe}", *([f"task={task}"] if task else [])]
            try:
                the_plan = plan(compose(*overrides), REGISTRY, TASKS)
            except (ConfigError, PlanError) as err:
                out[" ".join(overrides)] = f"refused: {err.key if isinstance(err, ConfigError) else 'plan'}"
                continue
            out[" ".join(overrides)] = sorted(f"{n.stage}:{k}" for k, n in the_plan.nodes.items())
    return out


def test_node_keys_of_every_builtin_recipe_and_task_are_unchanged(monkeypatch):
    from orchestrator.tasks.hf import precision

    # `task.train_dtype: auto` keys the dtype this CPU trains in; the file holds a bf16 CPU's keys (there auto
    # is bfloat16, the keys of the former default), so that the test means the same on every machine
    monkeypatch.setattr(precision, "cpu_bf16", lambda: "avx512_bf16")
    keys = _keys()
    if os.environ.get("ORCHESTRATOR_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    changed = sorted(k for k in golden.keys() | keys.keys() if golden.get(k) != keys.get(k))
    assert not changed, f"node keys changed for: {changed}"
