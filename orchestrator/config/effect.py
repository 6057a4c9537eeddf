"""Settings that their schema accepts but that cannot take effect in this run: refused before any compute.

A setting silently ignored is worse than an error: the user believes a sweep ran with it. Each rule names
the key, the value and what it needs (a step in the chain, a target in eval.targets, executor=ray).
Pure: reads the resolved config dict and the planned chains, imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.measure import targets as target_registry
from orchestrator.measure.evaluate import EvalSettings

RAY_ONLY = {"num_cpus": 0, "max_retries": 2}  # executor.* keys only the Ray executor reads, with their defaults
# stage settings every chain may use without naming the stage (the root's resources, the inserted export)
ALWAYS = {"baseline", "export"}


def check_effect(cfg: dict[str, Any], chain_steps: list[list[str]], pinned: frozenset[str]) -> None:
    """Refuse a stage setting no chain can use and an executor setting the chosen executor never reads.

    `chain_steps`: every name each planned chain answers to (stage, name written, twin); `pinned`: the dotted
    keys set on the command line. Recipe files may set defaults for stages they do not run (a task's config
    tunes every stage for its model), so only what the user set for this run, or sweeps, is held to it.
    """
    names = {n for steps in chain_steps for n in steps} | ALWAYS
    written = cfg.get("orderings") or [cfg.get("pipeline") or []]
    chains = ", ".join(">".join(c) or "baseline" for c in written[:6]) + (", ..." if len(written) > 6 else "")
    sweep = cfg.get("sweep") or {}
    # a recipe's sweep axes are the user's own unless the command line replaced its chains (then the sweep
    # layer drops them with a note: +recipe=pkdq pipeline=[quantize] asks for the recipe's other settings)
    rechained = bool(pinned & {"pipeline", "orderings"})
    for key in sorted(pinned | (set() if rechained else set(sweep))):
        parts = key.split(".")
        if parts[0] == "stages" and len(parts) > 2 and parts[1] not in names:
            where = f"sweep.{key}" if key in sweep and key not in pinned else key
            value = _get(cfg, parts) if key in pinned else sweep[key]
            raise ConfigError(where, value, f"no chain of this run has a {parts[1]} "
                              f"step (chains: {chains}), so it cannot take effect: add {parts[1]} to pipeline / "
                              "orderings, or drop the setting")
    check_targets_effect(cfg)
    executor = cfg.get("executor") or {}
    if executor.get("kind", "local") != "ray":
        for key, default in RAY_ONLY.items():
            if executor.get(key, default) != default:
                raise ConfigError(f"executor.{key}", executor[key], "is read by the Ray executor only: set "
                                  "executor=ray too, or drop it")


def check_targets_effect(cfg: dict[str, Any]) -> None:
    """A target's own settings and the constraints it adds need that target measured: `eval.browser.threads`
    or `report.max_download_mb` without the browser in eval.targets would be read by nobody."""
    evals, report = cfg.get("eval") or {}, cfg.get("report") or {}
    settings = EvalSettings.from_config(evals)
    listed = list(settings.targets)
    for target in target_registry.all_targets():
        if target.name == target_registry.REFERENCE or target.requested(settings):
            continue
        how = (f"add {target.name} to eval.targets (now {listed})" if target.selectable else
               f"switch it on in eval.{target.name}")
        for limit in target.limits:
            if report.get(limit.key) is not None:
                raise ConfigError(f"report.{limit.key}", report[limit.key], f"limits {limit.metric}, which only the "
                                  f"{target.name} target measures, and this run does not: {how}")
        block = evals.get(target.name)
        if target.Settings is not None and isinstance(block, dict):
            defaults = asdict(target.Settings())
            for key, value in block.items():
                if key in defaults and value != defaults[key]:
                    raise ConfigError(f"eval.{target.name}.{key}", value, f"configures the {target.name} "
                                      f"measurement, which this run does not take: {how}")
    if settings.samples != EvalSettings().samples and all(t == target_registry.REFERENCE for t in listed):
        raise ConfigError("eval.samples", settings.samples, "is how many test examples the other targets (browser, "
                          f"node) score; eval.targets lists none (now {listed})")


def _get(cfg: dict[str, Any], parts: list[str]) -> Any:
    node: Any = cfg
    for part in parts:
        node = node.get(part) if isinstance(node, dict) else None
    return node


LEGACY_LOSS = ("max_accuracy_drop", "max_perplexity_ratio")  # task-named forms of max_loss


def max_loss(block: dict[str, Any], quality: Any) -> float | None:
    """The `max_loss` of a gate or report block: its own, or the task-named key that means it for this task."""
    value = block.get("max_loss")
    return value if value is not None else block.get(quality.legacy_key)


def validate_loss(cfg: dict[str, Any], task_cls: type) -> None:
    """gate.* and report.* quality bounds in the task's own terms: a task-named key of another task's loss
    (max_perplexity_ratio on a classifier) can never take effect, so it is refused, naming max_loss."""
    quality = task_cls.quality
    for block in ("gate", "report"):
        values = cfg.get(block) or {}
        for key in LEGACY_LOSS:
            if values.get(key) is not None and key != quality.legacy_key:
                raise ConfigError(f"{block}.{key}", values[key], f"task {task_cls.name!r} measures "
                                  f"{quality.limit_words()}, not this: bound it with {block}.max_loss")
        own, named = values.get("max_loss"), values.get(quality.legacy_key)
        if own is not None and named is not None and own != named:
            raise ConfigError(f"{block}.{quality.legacy_key}", named, f"means {block}.max_loss, which is set to "
                              f"{own}: set one of them")
        limit = max_loss(values, quality)
        if limit is not None and quality.loss == "ratio" and limit < 1.0:
            key = f"{block}.max_loss" if own is not None else f"{block}.{quality.legacy_key}"
            raise ConfigError(key, limit, f"is a ratio of {quality.metric} to the baseline's: must be >= 1 "
                              "(1.1 = 10% worse)")
