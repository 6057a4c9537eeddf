"""The pure planner: recipe x sweep x orderings -> chains -> a DAG of content-addressed Nodes.

No torch, no MLflow: planning is cheap, deterministic and testable. A node's key hashes its parent's
key, the stage name and version and the canonical params, so two variants that share a prefix share
the prefix's nodes, and a rerun finds them in the cache.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.config import validate_settings, validate_stages, validate_task
from orchestrator.errors import ConfigError, PlanError

BASELINE = "baseline"
EXPORT = "export"


@dataclass(frozen=True)
class Node:
    """One stage applied to one parent artifact with one set of params."""

    key: str
    stage: str
    params: dict[str, Any]
    parent: str | None
    steps: tuple[str, ...]  # stage names from the root, as executed (inserted exports included)
    visible: tuple[str, ...] = ()  # the stages the user wrote, in order (inserted exports left out)
    auto: bool = False  # an export the planner inserted

    @property
    def pipeline(self) -> str:
        """The chain as users write it (`prune>distill>quantize`), `baseline` for the root."""
        names = (*self.visible, self.stage) if self.auto else self.visible
        return ">".join(names) if names else BASELINE


@dataclass
class Variant:
    """One point of the sweep: an ordering with one value per swept key, ending at `leaf`."""

    pipeline: str
    overrides: dict[str, Any]
    leaf: str

    @property
    def label(self) -> str:
        """Pipeline plus the swept values, e.g. `prune>quantize [ratio=0.3 mode=int8]`."""
        if not self.overrides:
            return self.pipeline
        vals = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.overrides.items())
        return f"{self.pipeline} [{vals}]"


@dataclass
class Plan:
    """The DAG (nodes in topological order) and the variants that end in it."""

    nodes: dict[str, Node] = field(default_factory=dict)
    variants: list[Variant] = field(default_factory=list)

    def children(self, key: str | None) -> list[Node]:
        """Nodes whose parent is `key` (None: the roots)."""
        return [n for n in self.nodes.values() if n.parent == key]

    def ancestors(self, key: str) -> list[Node]:
        """The chain from the root down to `key`, inclusive."""
        chain = []
        node: Node | None = self.nodes[key]
        while node is not None:
            chain.append(node)
            node = self.nodes.get(node.parent) if node.parent else None
        return chain[::-1]

    def descendants(self, key: str) -> list[Node]:
        """Every node below `key`."""
        out, todo = [], [key]
        while todo:
            kids = self.children(todo.pop())
            out.extend(kids)
            todo.extend(k.key for k in kids)
        return out

    def leaves(self) -> set[str]:
        """Keys where some variant ends."""
        return {v.leaf for v in self.variants}


def digest(obj: Any) -> str:
    """A short stable content hash of JSON-able data (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def root_node(task: dict[str, Any], task_version: str, seed: int) -> Node:
    """The baseline: its key covers task (model + data settings), the task code version and the seed."""
    key = digest({"task": task, "task_version": task_version, "seed": seed})
    return Node(key, BASELINE, dict(task), None, ())


def child_node(parent: Node, stage: str, version: str, params: dict[str, Any], auto: bool = False) -> Node:
    """A node below `parent`; equal inputs give an equal key (an inserted export equals a written one)."""
    key = digest({"parent": parent.key, "stage": stage, "version": version, "params": params})
    visible = parent.visible if auto else (*parent.visible, stage)
    return Node(key, stage, params, parent.key, (*parent.steps, stage), visible, auto)


def set_dotted(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """cfg['a']['b']['c'] = value for 'a.b.c'; the path must already exist."""
    *path, last = dotted.split(".")
    node = cfg
    for i, part in enumerate(path):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"sweep.{dotted}", value, f"no such key {'.'.join(path[:i + 1])!r} in the config")
        node = node[part]
    if not isinstance(node, dict) or last not in node:
        raise ConfigError(f"sweep.{dotted}", value, f"no such key {dotted!r} in the config")
    node[last] = value


def expand_sweep(cfg: dict[str, Any], pinned: frozenset[str] = frozenset()) -> list[tuple[dict, dict]]:
    """(overrides, config) per point of the sweep's cartesian product, in declaration order.

    Keys in `pinned` (set explicitly on the command line) are not swept: the explicit value wins.
    """
    sweep = {k: v for k, v in (cfg.get("sweep") or {}).items() if k not in pinned}
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key}", values, "must be a non-empty list of values")
    keys = list(sweep)
    points = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        variant = copy.deepcopy(cfg)
        for key, value in zip(keys, combo, strict=True):
            set_dotted(variant, key, value)
        points.append((dict(zip(keys, combo, strict=True)), variant))
    return points


def orderings(cfg: dict[str, Any]) -> list[list[str]]:
    """The chains to run: `orderings` if given, else the single `pipeline`."""
    chains = cfg.get("orderings") or [cfg.get("pipeline") or []]
    return [list(c) for c in chains]


def check_chain(chain: list[str], registry: dict[str, type], where: str) -> list[tuple[str, bool]]:
    """(stage, inserted) steps of `chain`, `export` inserted where torch feeds ONNX; PlanError if impossible."""
    for i, name in enumerate(chain):
        if name not in registry:
            raise ConfigError(f"{where}[{i}]", name, "unknown stage; known stages: " + ", ".join(sorted(registry)))
    steps, domain = [], "torch"
    for i, name in enumerate(chain):
        cls = registry[name]
        if domain != cls.consumes and cls.consumes == "onnx" and EXPORT in registry:
            steps.append((EXPORT, True))
            domain = registry[EXPORT].produces
        if domain != cls.consumes:
            prev = chain[i - 1] if i else BASELINE
            raise PlanError(f"{where}: {prev}({domain}) cannot feed {name}({cls.consumes}) in "
                            f"{'>'.join(chain)}: no stage turns {domain} back into {cls.consumes}; "
                            f"put {cls.consumes} stages before {prev}")
        steps.append((name, False))
        domain = cls.produces
    return steps


def plan(cfg: dict[str, Any], registry: dict[str, type], tasks: dict[str, type],
         pinned: frozenset[str] = frozenset()) -> Plan:
    """Validate `cfg` fully and expand it into a Plan; raises ConfigError/PlanError before any compute.

    `pinned`: dotted keys the user set explicitly; they override a sweep over the same key.
    """
    validate_settings(cfg)
    where = "orderings" if cfg.get("orderings") else "pipeline"
    chains = [(c, check_chain(c, registry, f"{where}[{i}]" if where == "orderings" else where))
              for i, c in enumerate(orderings(cfg))]
    result = Plan()
    for overrides, variant_cfg in expand_sweep(cfg, pinned):
        try:
            task = asdict(validate_task(variant_cfg.get("task"), tasks))
            params = {k: asdict(v) for k, v in validate_stages(variant_cfg.get("stages", {}), registry).items()}
        except ConfigError as err:
            if err.key not in overrides:
                raise
            raise ConfigError(f"sweep.{err.key}", err.value, err.allowed) from None
        root = root_node(task, tasks[task["name"]].version, int(variant_cfg.get("seed", 0)))
        result.nodes.setdefault(root.key, root)
        for chain, steps in chains:
            node = root
            for name, auto in steps:
                node = child_node(node, name, registry[name].version, params.get(name, {}), auto)
                result.nodes.setdefault(node.key, node)
            used = {k: v for k, v in overrides.items() if _applies(k, [name for name, _ in steps])}
            result.variants.append(Variant(">".join(chain) or BASELINE, used, node.key))
    result.variants = _dedupe(result.variants)
    return result


def _applies(dotted: str, steps: list[str]) -> bool:
    """Whether a swept key can change a chain: `stages.X.*` only matters when X is one of its steps."""
    parts = dotted.split(".")
    return parts[0] != "stages" or len(parts) < 2 or parts[1] in steps


def _dedupe(variants: list[Variant]) -> list[Variant]:
    """One variant per leaf: a sweep over params of a stage a chain lacks yields the same leaf again."""
    seen: dict[str, Variant] = {}
    for v in variants:
        seen.setdefault(v.leaf, v)
    return list(seen.values())
