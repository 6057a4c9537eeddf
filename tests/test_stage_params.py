"""Bad values of the stage params are refused before any compute, naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest
from conftest import compose

from orchestrator.engine.plan import plan
from orchestrator.errors import ConfigError
from orchestrator.stages import REGISTRY
from orchestrator.tasks import TASKS


@pytest.mark.parametrize("override, key, value, allowed", [
    ("stages.quantize.mode=int3", "stages.quantize.mode", "int3", "int8, fp16, int4"),
    ("stages.quantize.method=qat", "stages.quantize.method", "qat", "dynamic, static"),
    ("stages.quantize.calibration=kl", "stages.quantize.calibration", "kl", "minmax, entropy, percentile"),
    ("stages.quantize.calib_samples=0", "stages.quantize.calib_samples", 0, "[1, 100000]"),
    ("stages.quantize.percentile=10.0", "stages.quantize.percentile", 10.0, "[50, 100]"),
    ("stages.quantize.block_size=48", "stages.quantize.block_size", 48, "power of two"),
    ("stages.quantize.block_size=8", "stages.quantize.block_size", 8, "[16, 4096]"),
    ("stages.quantize.algorithm=awq", "stages.quantize.algorithm", "awq", "rtn, k_quant, hqq, gptq"),
    ("stages.fakequant.mode=int2", "stages.fakequant.mode", "int2", "inherit, int8, int4, fp16"),
    ("stages.fakequant.epochs=-1", "stages.fakequant.epochs", -1, "[0, 1000]"),
    ("stages.prune.method=random", "stages.prune.method", "random", "structured, unstructured"),
    ("stages.prune.ratio=1.0", "stages.prune.ratio", 1.0, "[0, 1)"),
    ("stages.distill.hidden_weight=-1.0", "stages.distill.hidden_weight", -1.0, "[0, 1000]"),
    ("stages.graph.level=max", "stages.graph.level", "max", "none, basic, extended, all"),
    ("stages.graph.slim=false stages.graph.level=none", "stages.graph.slim", False, "must be true when level"),
    ("stages.export.opset=12", "stages.export.opset", 12, "[13, 23]"),
])
def test_bad_values_name_key_value_and_what_is_allowed(override: str, key: str, value: object, allowed: str) -> None:
    cfg = compose("pipeline=[prune,distill,quantize,graph]", *override.split())
    with pytest.raises(ConfigError) as err:
        plan(cfg, REGISTRY, TASKS)
    assert (err.value.key, err.value.value) == (key, value)
    assert allowed in err.value.allowed
    assert key in str(err.value) and repr(value) in str(err.value)


def test_a_bad_value_in_a_sweep_names_the_key() -> None:
    cfg = compose("+recipe=pkdq", "sweep={stages.quantize.mode:[int8,int5]}")
    with pytest.raises(ConfigError, match="int5") as err:
        plan(cfg, REGISTRY, TASKS)
    assert err.value.key.endswith("stages.quantize.mode")


@pytest.mark.parametrize("override", ["stages.quantize.per_channel=maybe", "stages.distill.teacher=[a,b]",
                                      "stages.graph.levels=all"])
def test_wrong_types_and_unknown_keys_are_refused_by_the_schema(override: str) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match=override.split("=")[0].rsplit(".", 1)[-1]):
        compose("+recipe=pkdq", override)


def test_fakequant_cannot_inherit_a_mode_it_does_not_simulate() -> None:
    from orchestrator.stages.fakequant import FakeQuant

    with pytest.raises(ConfigError, match="stages.quantize.mode='int2'.*quantize>prune"):
        FakeQuant.plan_params({"mode": "inherit"}, {"quantize": {"mode": "int2"}}, (), "quantize>prune")


@pytest.mark.parametrize("override, key", [("stages.kvcache.residual=-1", "stages.kvcache.residual"),
                                           ("stages.kvcache.key_grouping=head", "stages.kvcache.key_grouping"),
                                           ("stages.kvcache.group=0", "stages.kvcache.group")])
def test_bad_kv_cache_layouts_name_their_key(override: str, key: str) -> None:
    cfg = compose("+recipe=llm_deploy", "~sweep", override)
    with pytest.raises(ConfigError) as err:
        plan(cfg, REGISTRY, TASKS)
    assert err.value.key == key
