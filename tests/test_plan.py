"""The pure planner: sweep expansion, shared prefixes, stable keys, inserted exports, impossible orders."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import compose

from orchestrator.config.schema import discover_recipes
from orchestrator.engine.plan import BASELINE, plan
from orchestrator.errors import ConfigError, PlanError
from orchestrator.stages import REGISTRY
from orchestrator.tasks import TASKS


def make(*overrides: str):
    return plan(compose(*overrides), REGISTRY, TASKS)


def test_pkdq_shares_prefixes():
    p = make("+recipe=pkdq")
    stages = [n.stage for n in p.nodes.values()]
    # 2 ratios x 2 modes: 1 baseline, 2 prune, 2 distill, 2 export, 4 quantize
    assert stages.count(BASELINE) == 1 and stages.count("prune") == 2 and stages.count("quantize") == 4
    assert len(p.nodes) == 11 and len(p.variants) == 4
    assert {v.pipeline for v in p.variants} == {"prune>distill>quantize"}
    leaf = p.nodes[p.variants[0].leaf]
    assert leaf.pipeline == "prune>distill>quantize"
    assert leaf.steps == ("prune", "distill", "export", "quantize")


def test_keys_are_stable_and_content_addressed():
    a, b = make("+recipe=pkdq"), make("+recipe=pkdq")
    assert list(a.nodes) == list(b.nodes)
    changed = make("+recipe=pkdq", "stages.distill.epochs=3")
    shared = set(a.nodes) & set(changed.nodes)
    # baseline and the two prune nodes are unaffected by a distill param; everything below changes
    assert {a.nodes[k].stage for k in shared} == {BASELINE, "prune"}
    seeded = make("+recipe=pkdq", "seed=1")
    assert not set(a.nodes) & set(seeded.nodes)


def test_command_line_value_pins_a_swept_key():
    p = make("+recipe=pkdq", "stages.prune.ratio=0.4")
    assert len(p.variants) == 4  # the sweep still expands; pinning happens in sweep.build_plan
    from orchestrator.sweep import build_plan, pinned_keys

    pinned = build_plan(compose("+recipe=pkdq", "stages.prune.ratio=0.4"), "pkdq",
                        pinned_keys(["+recipe=pkdq", "stages.prune.ratio=0.4"]))
    assert len(pinned.variants) == 2
    assert {n.params["ratio"] for n in pinned.nodes.values() if n.stage == "prune"} == {0.4}


def test_orderings_and_baseline_variant_dedupe():
    p = make("+recipe=pkdq", "orderings=[[],[prune],[prune,quantize],[distill,quantize]]")
    labels = sorted(v.label for v in p.variants)
    # the baseline and the prune-only chain ignore quantize.mode: one variant each, not two
    assert labels.count("baseline") == 1
    assert sum(lbl.startswith("prune [") for lbl in labels) == 2
    assert len(p.variants) == 1 + 2 + 4 + 2


def test_impossible_order_names_the_chain():
    with pytest.raises(PlanError, match=r"graph\(onnx\) cannot feed distill\(torch\) in prune>graph>distill"):
        make("+recipe=pkdq", "pipeline=[prune,graph,distill]")


def test_unknown_stage_names_position_and_choices():
    with pytest.raises(ConfigError, match=r"pipeline\[1\]='distil'.*known stages: awq, distill, export"):
        make("+recipe=pkdq", "pipeline=[prune,distil]")


@pytest.mark.parametrize("name", sorted(discover_recipes()))
def test_every_recipe_composes_and_plans(name):
    p = make(f"+recipe={name}")
    assert p.variants and all(v.leaf in p.nodes for v in p.variants)
    assert all(n.parent is None or n.parent in p.nodes for n in p.nodes.values())


def test_planner_imports_no_torch_or_mlflow():
    code = ("import sys, orchestrator.engine.plan, orchestrator.config.schema, orchestrator.stages, "
            "orchestrator.tasks; "
            "bad = [m for m in ('torch', 'mlflow', 'onnxruntime') if m in sys.modules]; print(bad); "
            "sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_keys_cover_library_versions_of_the_stages_that_use_them():
    from orchestrator.engine.plan import Keying

    cfg = compose("+recipe=pkdq")
    before = plan(cfg, REGISTRY, TASKS)
    bumped = Keying(versions=lambda names: {n: ("99.0" if n == "onnxruntime" else "1") for n in names})
    same = Keying(versions=lambda names: dict.fromkeys(names, "1"))
    a, b = plan(cfg, REGISTRY, TASKS, keying=same), plan(cfg, REGISTRY, TASKS, keying=bumped)
    assert set(before.nodes) != set(a.nodes)  # versions are in the key at all
    stages_changed = {a.nodes[ka].stage for ka, kb in zip(a.nodes, b.nodes, strict=True) if ka != kb}
    # onnxruntime produces the ONNX artifacts (export's fp16 rewrite, quantize) and everything below them
    assert stages_changed == {"export", "quantize"}


def test_baseline_key_covers_the_data_file_contents(tmp_path):
    from orchestrator.engine.fingerprint import Fingerprints
    from orchestrator.engine.plan import Keying, root_node
    from orchestrator.tasks.hf.task import HFClassification

    data = tmp_path / "reviews.csv"
    data.write_text("text,label\ngood,1\n")
    task = {"name": "hf", "model": str(tmp_path), "dataset": str(data)}
    fps = Fingerprints(tmp_path / "memo.json")
    first = root_node(task, HFClassification, 0, Keying(fps)).key
    assert root_node(task, HFClassification, 0, Keying(fps)).key == first
    data.write_text("text,label\nbad,0\n")  # same path, same size, new content
    assert root_node(task, HFClassification, 0, Keying(fps)).key != first
    fps.save()
    assert json.loads((tmp_path / "memo.json").read_text())  # memoised by size + mtime for the next run
