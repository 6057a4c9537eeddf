"""The pure planner: recipe x sweep x orderings -> chains -> a DAG of content-addressed Nodes.

No torch, no MLflow: planning is cheap, deterministic and testable. A node's key hashes its parent's
key, the stage name and version and the canonical params, so two variants that share a prefix share
the prefix's nodes, and a rerun finds them in the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from orchestrator.config.chains import expand_sweep, orderings
from orchestrator.config.effect import check_effect
from orchestrator.config.schema import validate_for_task, validate_settings, validate_stages, validate_task
from orchestrator.engine.fingerprint import Fingerprints, library_versions
from orchestrator.errors import ConfigError, PlanError
from orchestrator.hashing import digest
from orchestrator.stages.base import Earlier

BASELINE = "baseline"
EXPORT = "export"
TORCH, ONNX = "torch", "onnx"


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
    tail: bool = False  # an export the planner appended to realize fake quantization: it ends the chain

    @property
    def pipeline(self) -> str:
        """The chain as users write it (`prune>distill>quantize`), `baseline` for the root.

        An export inserted mid-chain shows itself (`prune>export`); one appended at the end stands for
        the chain it completes (`quantize>prune`).
        """
        names = (*self.visible, self.stage) if self.auto and not self.tail else self.visible
        return ">".join(names) if names else BASELINE


class Step(NamedTuple):
    """One planned step of a chain."""

    stage: str  # the registered stage that runs
    auto: bool  # inserted by the planner (an export)
    written: str  # the name in the recipe (`quantize` where its torch twin `fakequant` runs)
    tail: bool = False  # the export appended to a chain that ends fake-quantized in torch


@dataclass
class Variant:
    """One point of the sweep: an ordering with one value per swept key, ending at `leaf`."""

    pipeline: str
    overrides: dict[str, Any]
    leaf: str
    deployed: str = ""  # what the leaf ships where the chain does not say it (`Q4_K_M · llama.cpp`)
    said: str = ""  # the swept key `deployed` already states (not repeated in the brackets)

    @property
    def label(self) -> str:
        """Pipeline plus the swept values, e.g. `prune>quantize [ratio=0.3 mode=int8]`, then what it ships
        when a runtime stage ends it (`prune>gguf [ratio=0.3] · Q4_K_M · llama.cpp`)."""
        tail = f" · {self.deployed}" if self.deployed else ""
        shown = {k: v for k, v in self.overrides.items() if k != self.said}
        if not shown:
            return self.pipeline + tail
        vals = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in shown.items())
        return f"{self.pipeline} [{vals}]{tail}"


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


@dataclass
class Keying:
    """What keys cover besides params: file fingerprints and library versions (see orchestrator.engine.fingerprint)."""

    fingerprints: Fingerprints = field(default_factory=Fingerprints)
    versions: Callable[[tuple[str, ...]], dict[str, str]] = library_versions


def root_node(task: dict[str, Any], task_cls: type, seed: int, keying: Keying | None = None) -> Node:
    """The baseline: its key covers the task settings, a content fingerprint of its model and data files,
    the task code version, the versions of the libraries it trains with, and the seed."""
    keying = keying or Keying()
    sources = {name: keying.fingerprints.of(path) for name, path in task_cls.sources(task).items() if path}
    key = digest({"task": task, "task_version": task_cls.version, "seed": seed, "sources": sources,
                  "libraries": keying.versions(tuple(task_cls.libraries))})
    return Node(key, BASELINE, dict(task), None, ())


def child_node(parent: Node, stage: str, version: str, params: dict[str, Any], auto: bool = False,
               written: str | None = None, tail: bool = False, libraries: dict[str, str] | None = None) -> Node:
    """A node below `parent`; equal inputs give an equal key (an inserted export equals a written one).

    `written`: the name the user wrote for this step, when it differs from the stage that runs;
    `libraries`: versions of the libraries that produce its artifact.
    """
    key = digest({"parent": parent.key, "stage": stage, "version": version, "params": params,
                  "libraries": libraries or {}})
    visible = parent.visible if auto else (*parent.visible, written or stage)
    return Node(key, stage, params, parent.key, (*parent.steps, stage), visible, auto, tail)


def _resolve(name: str, rest: list[str], registry: dict[str, type]) -> str:
    """The stage that runs for `name`: its torch twin where a torch stage follows (ONNX has no way back)."""
    cls, twin = registry[name], getattr(registry[name], "torch_twin", None)
    if cls.consumes == ONNX and twin in registry and any(registry[n].consumes == TORCH for n in rest):
        return twin
    return name


def check_chain(chain: list[str], registry: dict[str, type], where: str) -> list[Step]:
    """The planned steps of `chain`; PlanError if the order is impossible.

    `export` is inserted where torch feeds ONNX; a stage with a torch twin (quantize -> fakequant) runs
    as the twin where a torch stage comes after it; a chain that ends fake-quantized in torch gets a
    final export that turns it into a real low-precision ONNX model.
    """
    if not isinstance(chain, list):
        raise ConfigError(where, chain, "a list of stage names, e.g. [prune, distill, quantize]")
    for i, name in enumerate(chain):
        if not isinstance(name, str):
            raise ConfigError(f"{where}[{i}]", name, "a stage name; known stages: " + ", ".join(sorted(registry)))
        if name not in registry:
            raise ConfigError(f"{where}[{i}]", name, "unknown stage; known stages: " + ", ".join(sorted(registry)))
    steps, domain = [], TORCH
    for i, name in enumerate(chain):
        stage = _resolve(name, chain[i + 1:], registry)
        cls = registry[stage]
        if domain == TORCH and cls.consumes == ONNX and EXPORT in registry:
            steps.append(Step(EXPORT, True, EXPORT))
            domain = registry[EXPORT].produces
        if domain != cls.consumes:
            prev = chain[i - 1] if i else BASELINE
            raise PlanError(f"{where}: {prev}({domain}) cannot feed {name}({cls.consumes}) in "
                            f"{'>'.join(chain)}: no stage turns {domain} back into {cls.consumes}; "
                            f"put {cls.consumes} stages before {prev}")
        steps.append(Step(stage, False, name))
        domain = cls.produces
    lowered = any(getattr(registry[s.stage], "lowered_by_export", False) for s in steps)
    if domain == TORCH and lowered and EXPORT in registry:
        steps.append(Step(EXPORT, True, EXPORT, tail=True))
    return steps


def plan(cfg: dict[str, Any], registry: dict[str, type], tasks: dict[str, type],
         pinned: frozenset[str] = frozenset(), keying: Keying | None = None) -> Plan:
    """Validate `cfg` fully and expand it into a Plan; raises ConfigError/PlanError before any compute.

    `pinned`: dotted keys the user set explicitly; they override a sweep over the same key.
    `keying`: where file fingerprints and library versions come from (default: hashed now, installed now).
    """
    keying = keying or Keying()
    validate_settings(cfg)
    where = "orderings" if cfg.get("orderings") else "pipeline"
    chains = [(c, check_chain(c, registry, f"{where}[{i}]" if where == "orderings" else where))
              for i, c in enumerate(orderings(cfg))]
    check_effect(cfg, [_names(steps, registry) for _, steps in chains], pinned)
    result = Plan()
    for overrides, variant_cfg in expand_sweep(cfg, pinned):
        try:
            task = asdict(validate_task(variant_cfg.get("task"), tasks))
            params = {k: asdict(v) for k, v in validate_stages(variant_cfg.get("stages", {}), registry).items()}
        except ConfigError as err:
            if err.key not in overrides:
                raise
            raise ConfigError(f"sweep.{err.key}", err.value, err.allowed) from None
        validate_for_task(variant_cfg, tasks[task["name"]])
        root = root_node(task, tasks[task["name"]], int(variant_cfg.get("seed", 0)), keying)
        result.nodes.setdefault(root.key, root)
        for chain, steps in chains:
            node = _add_chain(result, root, ">".join(chain) or BASELINE, steps, params, registry,
                              tasks[task["name"]], keying)
            used = {k: v for k, v in overrides.items() if _applies(k, _names(steps, registry))}
            leaf = registry[node.stage] if node.parent else None
            result.variants.append(Variant(">".join(chain) or BASELINE, used, node.key,
                                           leaf.deployed_as(node.params) if leaf else "",
                                           f"stages.{node.stage}.{leaf.ships}" if leaf and leaf.ships else ""))
    result.variants = _dedupe(result.variants)
    return result


def _add_chain(result: Plan, root: Node, label: str, steps: list[Step], params: dict[str, dict[str, Any]],
               registry: dict[str, type], task_cls: type, keying: Keying) -> Node:
    """Add the nodes of one chain below `root` (shared prefixes are found by key); returns its leaf.

    Each stage may refuse params its position or the task cannot serve (e.g. `shrink` on a CNN).
    A stage that consumes torch runs the task's model code, so the task's libraries are in its key too.
    """
    node, earlier = root, []
    for step in steps:
        cls = registry[step.stage]
        own = params.get(step.stage, {})
        node_params = cls.plan_params(own, params, tuple(earlier), label)
        cls.check_task(cls.Params(**node_params), task_cls)
        libs = (*cls.libraries, *(task_cls.libraries if cls.consumes == TORCH else ()))
        node = child_node(node, step.stage, cls.version, node_params, step.auto, step.written, step.tail,
                          keying.versions(libs))
        result.nodes.setdefault(node.key, node)
        earlier.append(Earlier(step.written, step.stage, cls.produces))
    return node


def _names(steps: list[Step], registry: dict[str, type]) -> list[str]:
    """Every name a chain's steps answer to: stage, name written, and the stage a twin stands in for."""
    return [n for s in steps for n in (s.stage, s.written, getattr(registry[s.stage], "written_as", None)) if n]


def _applies(dotted: str, steps: list[str]) -> bool:
    """Whether a swept key can change a chain: `stages.X.*` only matters when X is one of its steps
    (`stages.quantize.mode` also sets the mode of the torch twin `fakequant`)."""
    parts = dotted.split(".")
    return parts[0] != "stages" or len(parts) < 2 or parts[1] in steps


def _dedupe(variants: list[Variant]) -> list[Variant]:
    """One variant per leaf: a sweep over params of a stage a chain lacks yields the same leaf again."""
    seen: dict[str, Variant] = {}
    for v in variants:
        seen.setdefault(v.leaf, v)
    return list(seen.values())
