"""The task contract's opt-in capabilities: each built-in task declares exactly what it can do, and a stage or a
setting that needs a capability refuses a task without it while planning (before any compute), naming the key."""

from __future__ import annotations

import pytest
from conftest import compose

from orchestrator.config import plugins
from orchestrator.engine.plan import plan
from orchestrator.errors import ConfigError
from orchestrator.stages import REGISTRY
from orchestrator.tasks import TASKS
from orchestrator.tasks.base import Task
from orchestrator.tasks.capabilities import (
    ABOUT,
    Drafting,
    KVCache,
    Layered,
    LLMRuntimes,
    Rescalable,
    StructuredPruning,
    TransferData,
    VariableLength,
    Vocabulary,
    declared,
    missing,
    supports,
)

TEXT = {Layered, Vocabulary, TransferData, VariableLength}
LM = {KVCache, Drafting, StructuredPruning, Layered, LLMRuntimes, Rescalable}
EXPECTED = {"digits": set(), "hf": TEXT, "tweets": TEXT, "lm": LM, "tinylm": LM, "smollm2": LM}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_built_in_task_declares_exactly_its_capabilities_and_implements_them(name: str) -> None:
    cls = TASKS[name]
    assert declared(cls) == EXPECTED[name]
    assert missing(cls) == []
    # the flags the measurement layer reads follow the declarations
    assert (cls.kv_cache, cls.variable_length, cls.structured_pruning) == (
        KVCache in EXPECTED[name], VariableLength in EXPECTED[name], StructuredPruning in EXPECTED[name])


def test_the_core_contract_has_no_capability_methods() -> None:
    for cap in ABOUT:
        # a KV-cache task must override the core's onnx_logits (it completes the cache feeds)
        for method in (n for n, v in vars(cap).items() if callable(v) and n[0] != "_" and n != "onnx_logits"):
            assert not hasattr(Task, method), f"Task.{method} belongs to {cap.__name__} only"


@pytest.mark.parametrize("cap", list(ABOUT), ids=lambda c: c.__name__)
def test_messages_name_the_built_in_tasks_that_have_the_capability(cap: type) -> None:
    assert ABOUT[cap].tasks.split(", ") == [n for n, cls in TASKS.items() if supports(cls, cap)]


def test_a_plugin_setting_an_old_flag_keeps_the_capability_and_a_half_declared_one_is_found() -> None:
    class Padded(Task):
        name = "padded"
        variable_length = True

    class Half(KVCache, Vocabulary, Task):
        name = "half"

        def token_ids(self, split: str) -> list:
            return []

    assert supports(Padded, VariableLength) and not supports(Padded, Vocabulary)
    assert Half.kv_cache and missing(Half) == ["KVCache.onnx_logits", "Vocabulary.trim_vocab"]
    plugins.check_capabilities({"padded": Padded})
    with pytest.raises(plugins.PluginError, match="plugin task 'half' .* define KVCache.onnx_logits, "
                                                  "Vocabulary.trim_vocab"):
        plugins.check_capabilities({"half": Half})


@pytest.mark.parametrize("overrides, key, lacks", [
    (["pipeline=[trim]"], "stages.trim", "task 'digits' has no vocabulary: stages.trim needs a task with one "
                                         "(hf, tweets)"),
    (["task=tinylm", "pipeline=[trim]"], "stages.trim", "task 'tinylm' has no vocabulary"),
    (["pipeline=[kvcache]"], "stages.kvcache", "task 'digits' has no KV cache"),
    (["pipeline=[distill]", "stages.distill.shrink=2"], "stages.distill.shrink", "task 'digits' cannot drop layers"),
    (["pipeline=[distill]", "stages.distill.keep_layers=2"], "stages.distill.keep_layers", "cannot drop layers"),
    (["pipeline=[distill]", "stages.distill.transfer=10"], "stages.distill.transfer", "has no unlabelled data"),
    (["task=tinylm", "pipeline=[distill]", "stages.distill.transfer=10"], "stages.distill.transfer",
     "task 'tinylm' has no unlabelled data"),
    (["pipeline=[prune]", "stages.prune.heads=0.5"], "stages.prune.heads", "has no structured pruning of its own"),
    (["pipeline=[prune]", "stages.prune.importance=mix"], "stages.prune.importance", "no structured pruning"),
    (["pipeline=[quantize]", "eval.pad_to=longest"], "eval.pad_to", "task 'digits' has fixed-size inputs"),
    (["task=tinylm", "pipeline=[quantize]", "eval.pad_to=longest"], "eval.pad_to", "has fixed-size inputs"),
])
def test_a_stage_or_setting_needing_a_capability_refuses_a_task_without_it_while_planning(
        overrides: list[str], key: str, lacks: str) -> None:
    with pytest.raises(ConfigError) as err:
        plan(compose(*overrides), REGISTRY, TASKS)
    assert err.value.key == key and lacks in str(err.value)


def test_speculative_decoding_refuses_a_task_that_does_not_draft() -> None:
    plugins.install()  # the LM family's speculative target joins the registry
    with pytest.raises(ConfigError) as err:
        plan(compose("pipeline=[quantize]", "eval.speculative.target=baseline"), REGISTRY, TASKS)
    assert err.value.key == "eval.speculative" and "task 'digits' does not generate text" in str(err.value)


def test_a_task_with_the_capability_plans_the_same_settings() -> None:
    for overrides in (["task=tweets", "pipeline=[trim]"], ["task=tinylm", "pipeline=[kvcache]"],
                      ["task=tweets", "pipeline=[distill]", "stages.distill.keep_layers=2",
                       "stages.distill.transfer=10"], ["task=tweets", "pipeline=[quantize]", "eval.pad_to=longest"]):
        assert plan(compose(*overrides), REGISTRY, TASKS).nodes

