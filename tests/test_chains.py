"""The planner's chain logic: Q anywhere, inserted and appended exports, impossible orders, shared prefixes."""

from __future__ import annotations

import pytest
from conftest import compose

from orchestrator.errors import ConfigError, PlanError
from orchestrator.plan import check_chain, plan
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
