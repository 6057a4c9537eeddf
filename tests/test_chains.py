"""The planner's chain logic: Q anywhere, inserted and appended exports, impossible orders, shared prefixes."""

from __future__ import annotations

import pytest
from conftest import compose

from orchestrator.config.schema import discover_recipes
from orchestrator.engine.plan import check_chain, plan
from orchestrator.errors import ConfigError, PlanError
from orchestrator.stages import REGISTRY
from orchestrator.tasks import TASKS


def steps(chain: list[str]) -> list[tuple[str, bool, str, bool]]:
    return [tuple(s) for s in check_chain(chain, REGISTRY, "pipeline")]


def test_quantize_at_the_end_is_onnx_quantization_after_an_inserted_export() -> None:
    assert steps(["prune", "quantize"]) == [("prune", False, "prune", False), ("export", True, "export", False),
                                            ("quantize", False, "quantize", False)]


def test_quantize_before_a_torch_stage_runs_as_fakequant_and_the_chain_ends_in_an_export() -> None:
    assert steps(["quantize", "prune", "distill"]) == [
        ("fakequant", False, "quantize", False), ("prune", False, "prune", False),
        ("distill", False, "distill", False), ("export", True, "export", True)]


def test_a_written_fakequant_also_gets_the_final_export_but_a_plain_torch_chain_does_not() -> None:
    assert steps(["fakequant"])[-1] == ("export", True, "export", True)
    assert steps(["prune", "distill"]) == [("prune", False, "prune", False), ("distill", False, "distill", False)]


@pytest.mark.parametrize("chain, message", [
    (["export", "prune"], "export(onnx) cannot feed prune(torch) in export>prune"),
    (["graph", "distill"], "graph(onnx) cannot feed distill(torch) in graph>distill"),
    (["quantize", "graph", "prune"], "graph(onnx) cannot feed prune(torch) in quantize>graph>prune"),
])
def test_impossible_orders_are_refused_naming_the_chain(chain: list[str], message: str) -> None:
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_chain(chain, REGISTRY, "pipeline")


def test_pipeline_names_read_as_written_and_the_appended_export_stands_for_its_chain() -> None:
    cfg = compose("pipeline=[quantize,prune,distill]")
    p = plan(cfg, REGISTRY, TASKS)
    (variant,) = p.variants
    leaf = p.nodes[variant.leaf]
    assert leaf.stage == "export" and leaf.tail and leaf.pipeline == "quantize>prune>distill" == variant.pipeline
    fq = next(n for n in p.nodes.values() if n.stage == "fakequant")
    assert fq.pipeline == "quantize" and fq.steps == ("fakequant",)
    inserted = plan(compose("pipeline=[prune,quantize]"), REGISTRY, TASKS)
    assert {n.pipeline for n in inserted.nodes.values()} == {"baseline", "prune", "prune>export", "prune>quantize"}


def test_fakequant_inherits_the_quantize_mode_unless_it_sets_its_own() -> None:
    inherited = plan(compose("pipeline=[quantize,distill]", "stages.quantize.mode=int4"), REGISTRY, TASKS)
    assert [n.params["mode"] for n in inherited.nodes.values() if n.stage == "fakequant"] == ["int4"]
    own = plan(compose("pipeline=[quantize,distill]", "stages.quantize.mode=int4", "stages.fakequant.mode=fp16"),
               REGISTRY, TASKS)
    assert [n.params["mode"] for n in own.nodes.values() if n.stage == "fakequant"] == ["fp16"]


def test_a_sweep_over_the_quantize_mode_labels_fakequant_chains_too() -> None:
    p = plan(compose("+recipe=qat"), REGISTRY, TASKS)
    assert sorted(v.label for v in p.variants) == [
        "fakequant [mode=int4]", "fakequant [mode=int8]", "quantize [mode=int4]", "quantize [mode=int8]"]


def test_params_a_quantize_mode_ignores_do_not_split_nodes() -> None:
    p = plan(compose("+recipe=ptq_int8"), REGISTRY, TASKS)
    quant = [n for n in p.nodes.values() if n.stage == "quantize"]
    # 2 per_channel values x (1 dynamic + 3 static calibrations); dynamic ignores the calibration method
    assert len(quant) == 8 == len(p.variants)
    assert all("calibration" not in n.params for n in quant if n.params["method"] == "dynamic")


def test_the_ordering_study_is_one_dag_with_shared_prefixes() -> None:
    p = plan(compose("+recipe=ordering_study"), REGISTRY, TASKS)
    orders = {v.pipeline for v in p.variants}
    assert len(orders) == 10 and "baseline" in orders and "quantize>distill>prune" in orders
    # 6 orders x 2 precisions x 2 ratios, P x 2 ratios, Q x 2 precisions, KD, baseline
    assert len(p.variants) == 24 + 2 + 2 + 1 + 1
    assert all(p.nodes[v.leaf].pipeline == v.pipeline for v in p.variants)
    by_stage = {}
    for n in p.nodes.values():
        by_stage[n.stage] = by_stage.get(n.stage, 0) + 1
    # shared prefixes: one KD of the baseline, two P of the baseline, two fakequant of the baseline ...
    assert by_stage == {"baseline": 1, "prune": 2 + 2 + 4 + 4 + 4, "distill": 1 + 2 + 4 + 4 + 2,
                        "fakequant": 2 + 4 + 2, "quantize": 4 + 4 + 2, "export": 2 + 2 + 1 + 4 + 4 + 4 + 4}
    assert len(p.nodes) == 69


def test_a_distill_teacher_must_be_an_earlier_torch_step_of_the_chain() -> None:
    ok = plan(compose("pipeline=[prune,distill]", "stages.distill.teacher=prune"), REGISTRY, TASKS)
    assert [n.params["teacher"] for n in ok.nodes.values() if n.stage == "distill"] == ["prune"]
    plan(compose("pipeline=[quantize,distill]", "stages.distill.teacher=quantize"), REGISTRY, TASKS)
    with pytest.raises(ConfigError) as err:
        plan(compose("pipeline=[distill,prune]", "stages.distill.teacher=prune"), REGISTRY, TASKS)
    assert err.value.key == "stages.distill.teacher" and err.value.value == "prune"
    assert "distill>prune" in str(err.value) and "baseline" in err.value.allowed


def test_teachers_change_the_distill_key() -> None:
    keys = {plan(compose("pipeline=[prune,distill]", f"stages.distill.teacher={t}"), REGISTRY, TASKS).variants[0].leaf
            for t in ("baseline", "prune")}
    assert len(keys) == 2


@pytest.mark.parametrize("recipe", sorted(discover_recipes()))
def test_every_recipe_composes_and_plans(recipe: str) -> None:
    p = plan(compose(f"+recipe={recipe}"), REGISTRY, TASKS)
    assert p.variants and all(v.leaf in p.nodes for v in p.variants)
