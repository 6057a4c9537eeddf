"""Measurement targets: where an artifact is measured. Adding one = its module + a line here + a test.

`eval.targets` lists them (default `[ort]`). `ort` is always measured (quality, the gate and the report
come from it); every other target's metrics are cached per node under its own key (settings + runtime
versions), so adding `browser` to a finished sweep measures in the browser only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.hashing import digest
from orchestrator.measure.targets.base import Target, TargetError


def registry() -> dict[str, Target]:
    """Target name -> instance (imported lazily: the browser module needs Playwright only when used)."""
    from orchestrator.measure.targets.browser import BrowserTarget
    from orchestrator.measure.targets.node import NodeTarget
    from orchestrator.measure.targets.ort import OrtTarget

    return {t.name: t for t in (OrtTarget(), BrowserTarget(), NodeTarget())}


def extra(settings: Any) -> list[Target]:
    """The targets besides `ort` that `settings.targets` asks for, in order."""
    targets = registry()
    return [targets[n] for n in dict.fromkeys(settings.targets) if n != "ort"]


def check(settings: Any) -> None:
    """Before any compute: every listed target can run here (ConfigError naming eval.targets otherwise)."""
    for target in extra(settings):
        target.check(settings)


def eval_key(target: Target, settings: Any) -> str:
    """The cache key of `target`'s measurements under `settings` (file eval/<name>-<hash>.json)."""
    return f"{target.name}-{digest({'target': target.name, **target.key_data(settings)})}"


def measure_extra(cache: Any, key: str, model: Path, task: Any, settings: Any) -> tuple[dict[str, float],
                                                                                        dict[str, str]]:
    """Metrics of node `key` on every extra target (cached ones reused) and the error of each that failed.

    A failed target does not fail the node: its other measurements stand, and the failure is retried on
    the next run because nothing is cached for it.
    """
    metrics: dict[str, float] = {}
    errors: dict[str, str] = {}
    for target in extra(settings):
        ekey = eval_key(target, settings)
        found = cache.eval_metrics(key, ekey)
        if found is None:
            try:
                found = target.measure(model, task, settings)
            except TargetError as err:
                errors[target.name] = str(err)
                continue
            cache.put_eval(key, ekey, found)
        metrics.update(found)
    return metrics, errors


def tags(settings: Any) -> dict[str, str]:
    """Runtime version tags of every listed target."""
    out: dict[str, str] = {}
    for target in extra(settings):
        out.update(target.tags(settings))
    return out


__all__ = ["Target", "TargetError", "check", "eval_key", "extra", "measure_extra", "registry", "tags"]
