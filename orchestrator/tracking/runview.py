"""What a person sees of a node in the MLflow UI: its run name, its description, ratio metrics, and which
ancestor metrics it carries. Pure (no MLflow): tracking.py logs what this module decides.

- Names tell variants apart within ~40 characters: the swept values first, then a short chain
  (`0.5·fp16 · P>KD>Q`); intermediate nodes read as steps (`step: P>KD (0.5)`). The full pipeline stays in
  the `orchestrator.pipeline` tag and the full variant label in `orchestrator.variant`.
- Ratios against the node's own baseline (same sweep, same measurement settings) so the runs table can
  sort by them: `speedup` (baseline p50 / p50), `size_ratio` (size / baseline size), the task's loss
  (Quality.loss_metric: `accuracy_drop`, `perplexity_ratio`), and the ratios each other target declares
  (`<target>_speedup`, ...).
- A leaf carries, of its ancestors, only what explains it: quality and size after each step, and the
  baseline's quality, latency and size (which the report rebuilt from MLflow needs). Every other
  ancestor metric is in the run's `chain_metrics.json` artifact, so the table is not ~100 columns wide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.measure import targets
from orchestrator.tasks.quality import ACCURACY, Quality

if TYPE_CHECKING:
    from orchestrator.engine.plan import Plan

SHORT = {"prune": "P", "distill": "KD", "quantize": "Q", "fakequant": "Q", "graph": "G", "export": "E",
         "trim": "T", "split": "S"}
NAME_WIDTH = 40
ANCESTOR_KEEP = ("model_size_mb",)  # and the task's quality metric
BASELINE_KEEP = ("f1", "latency_p50_ms", "model_size_mb", "decode_tokens_per_s",
                 "kv_cache_mb_per_1k_tokens")  # + the quality, every target's latency, size and limited metrics
WORDS = {"prune": "pruned", "distill": "distilled", "quantize": "quantized", "fakequant": "fake-quantized",
         "graph": "graph-optimized", "export": "exported", "baseline": "the baseline"}


def short_chain(visible: tuple[str, ...] | list[str]) -> str:
    """`P>KD>Q` for prune>distill>quantize (unknown stages keep their name)."""
    return ">".join(SHORT.get(s, s) for s in visible) or "baseline"


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def leaf_name(visible: tuple[str, ...], overrides: dict[str, Any]) -> str:
    """`0.5·fp16 · P>KD>Q`: the swept values first (what tells variants apart), then the chain."""
    chain = short_chain(visible)
    if not overrides:
        return chain
    values = "·".join(_fmt(v) for v in overrides.values())
    room = max(NAME_WIDTH - len(chain) - 3, 8)
    if len(values) > room:
        values = values[:room - 1] + "…"
    return f"{values} · {chain}"


def step_name(visible: tuple[str, ...], swept: dict[str, Any]) -> str:
    """`step: P>KD (0.5)`: an intermediate node, with the swept values of its own steps."""
    values = "·".join(_fmt(v) for v in swept.values())
    return f"step: {short_chain(visible)}" + (f" ({values})" if values else "")


def ratios(own: dict[str, float], base: dict[str, float], quality: Quality = ACCURACY) -> dict[str, float]:
    """speedup, size_ratio, the task's loss (and per extra target) of `own` against its baseline `base`."""
    out: dict[str, float] = {}

    def ratio(name: str, num: dict[str, float], num_key: str, den: dict[str, float], den_key: str) -> None:
        if num.get(num_key) and den.get(den_key):
            out[name] = num[num_key] / den[den_key]

    for target in targets.all_targets():
        for name, (metric, speedup) in target.ratios().items():
            ratio(name, *((base, metric, own, metric) if speedup else (own, metric, base, metric)))
    loss = quality.loss_of(own, base)
    if loss is not None:
        out[quality.loss_metric] = loss
    return out


def baseline_keep() -> set[str]:
    """The baseline metrics a node run carries: BASELINE_KEEP and each target's axes and limited metrics (the
    report rebuilt from MLflow compares every variant with them)."""
    own = {m for t in targets.all_targets() for m in (t.latency_metric, t.size_metric, *(x.metric for x in t.limits))}
    return {*BASELINE_KEEP, *own}


def kept_ancestor_metrics(step: str, metrics: dict[str, float], quality: Quality = ACCURACY) -> dict[str, float]:
    """The ancestor metrics a node run carries as `<step>/<metric>` (see the module doc)."""
    keep = (*(baseline_keep() if step == "baseline" else ANCESTOR_KEEP), quality.metric)
    return {f"{step}/{k}": v for k, v in metrics.items() if k in keep}


def describe_leaf(steps: list[tuple[str, dict[str, Any]]], own: dict[str, float], base: dict[str, float],
                  quality: Quality = ACCURACY) -> str:
    """The leaf's chain in words and how it compares with the baseline (Markdown, for its description)."""
    parts = []
    for stage, params in steps:
        settings = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()
                             if k in ("ratio", "mode", "method", "temperature", "epochs", "level", "shrink")
                             and not (k == "shrink" and v == 1))
        parts.append(f"{WORDS.get(stage, stage)}" + (f" ({settings})" if settings else ""))
    r = ratios(own, base, quality)
    lines = ["**" + (", then ".join(parts) or "The baseline") + "**", ""]
    compare = []
    if "speedup" in r:
        how = "faster than" if r["speedup"] >= 1 else "the speed of"
        compare.append(f"{r['speedup']:.2f}x {how} the baseline "
                       f"(p50 {own['latency_p50_ms']:.4g} ms vs {base['latency_p50_ms']:.4g} ms)")
    if "size_ratio" in r:
        compare.append(f"{1 / r['size_ratio']:.2f}x smaller ({own['model_size_mb']:.4g} MB vs "
                       f"{base['model_size_mb']:.4g} MB)" if r["size_ratio"] <= 1 else
                       f"{r['size_ratio']:.2f}x the baseline's size")
    if quality.loss_metric in r:
        fmt = quality.fmt
        compare.append(f"{quality.metric} {fmt.format(own[quality.metric])}, "
                       f"{quality.describe_loss(r[quality.loss_metric])} {fmt.format(base[quality.metric])}")
    for target in targets.all_targets():  # the reference's speed-up is the first line
        if target.name != targets.REFERENCE and f"{target.name}_speedup" in r:
            compare.append(f"{target.place} {r[f'{target.name}_speedup']:.2f}x the baseline's speed "
                           f"(p50 {own[target.latency_metric]:.4g} ms)")
    return "\n".join([*lines, *(f"- {c}" for c in compare)])


def names(plan: Any, node: Any) -> tuple[str, str | None]:
    """(run name, full variant label or None) of `node` in `plan`."""
    if node.parent is None:
        return "baseline", "baseline" if node.key in plan.leaves() else None
    for v in plan.variants:
        if v.leaf == node.key:
            return leaf_name(node.visible or (node.stage,), v.overrides), v.label
    steps = set(node.visible) | {node.stage}
    below = [v for v in plan.variants if node.key in {a.key for a in plan.ancestors(v.leaf)}]
    swept = {k: val for k, val in (below[0].overrides if below else {}).items()
             if k.split(".")[0] != "stages" or k.split(".")[1] in steps}
    shown = (*node.visible, node.stage) if node.auto and not node.tail else node.visible  # an inserted export
    return step_name(shown or (node.stage,), swept), None


def chain_params(plan: Plan, key: str) -> dict[str, str]:
    """Flattened params of every step down to `key`: `task.epochs`, `prune.ratio`, `quantize.mode`..."""
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    for node in plan.ancestors(key):
        name = "task" if node.stage == "baseline" else numbered(node.stage, seen)
        for param, value in node.params.items():
            out[f"{name}.{param}"] = str(value)
    return out


def numbered(stage: str, seen: dict[str, int]) -> str:
    """`prune`, then `prune#2` if the same stage appears again in one chain."""
    seen[stage] = seen.get(stage, 0) + 1
    return stage if seen[stage] == 1 else f"{stage}#{seen[stage]}"

