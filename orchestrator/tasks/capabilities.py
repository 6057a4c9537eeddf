"""Opt-in parts of the task contract: what a task can do beyond the core every task implements (`Task`).

A task declares a capability by inheriting its class and implementing its methods:

    class MyTask(Vocabulary, Task): ...

The stages, the config checks and the targets ask `supports(task_cls, Capability)` before any compute and refuse
a combination the task cannot serve with one ConfigError (`require`) that names the key and what the task lacks;
nothing calls a capability's method on a task that did not declare it.

| capability          | methods                                    | asked by                                          |
|---------------------|--------------------------------------------|---------------------------------------------------|
| `StructuredPruning` | prune_structured                           | stages.prune (importance, heads, own pruning)     |
| `KVCache`           | onnx_logits (completes the cache feeds)    | stages.kvcache, quantize (static, gptq), targets  |
| `VariableLength`    | onnx_batches / latency_feeds honour pad_to | eval.pad_to, latency_seq_len                      |
| `Layered`           | shrink, hidden_states, forward_with_states | stages.distill (shrink, keep_layers, hidden KD)   |
| `Vocabulary`        | token_ids, trim_vocab (and a `tokenizer`)  | stages.trim                                       |
| `TransferData`      | transfer_split                             | stages.distill.transfer                           |
| `Drafting`          | draft_prompts                              | eval.speculative                                  |
| `LLMRuntimes`       | gguf_tokenizer, save_hf, measure_runtime   | stages.gguf / genai, llamacpp / genai targets     |
| `Rescalable`        | scale_groups                               | stages.awq                                        |

Three capabilities were once ClassVar flags (`kv_cache`, `structured_pruning`, `variable_length`): a task that
declares one gets its flag set (the measurement layer, below the tasks, still reads it), and a plugin that only
sets the flag is still taken to have the capability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class About:
    """How messages speak of a capability: what a task without it `lacks`, what a key `wants`, which built-in
    `tasks` have it; `flag`: the older ClassVar that declared it ('' for none)."""

    lacks: str
    wants: str
    tasks: str
    flag: str = ""


ABOUT: dict[type, About] = {}


def required(method: Any) -> Any:
    """Mark a capability's method that a task declaring the capability must implement (see `missing`)."""
    method.__required__ = True
    return method


class Capability:
    """Base of the capabilities. `class X(Capability, lacks=..., wants=..., tasks=...)` defines one."""

    def __init_subclass__(cls, lacks: str = "", wants: str = "", tasks: str = "", flag: str = "",
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if lacks:
            ABOUT[cls] = About(lacks, wants, tasks, flag)
            return
        for cap, about in ABOUT.items():  # a task declaring capabilities: set the flags the lower layers read
            if about.flag and issubclass(cls, cap):
                setattr(cls, about.flag, True)


def supports(task_cls: type, capability: type) -> bool:
    """Whether `task_cls` declares `capability` (or sets its older flag)."""
    flag = ABOUT[capability].flag
    return issubclass(task_cls, capability) or bool(flag and getattr(task_cls, flag, False))


def declared(task_cls: type) -> set[type]:
    """Every capability `task_cls` has."""
    return {cap for cap in ABOUT if supports(task_cls, cap)}


def missing(task_cls: type) -> list[str]:
    """The methods of its capabilities that `task_cls` declares but leaves unimplemented ('Cap.method')."""
    out = []
    for cap in ABOUT:
        if issubclass(task_cls, cap):
            out += [f"{cap.__name__}.{name}" for name, value in vars(cap).items()
                    if getattr(value, "__required__", False) and getattr(task_cls, name) is value]
    return out


def require(task_cls: type, capability: type, key: str, value: Any, hint: str = "") -> None:
    """Raise one ConfigError unless the task has `capability`: 'task 'digits' has no vocabulary: stages.trim
    needs a task with one (hf, tweets)'."""
    if supports(task_cls, capability):
        return
    about = ABOUT[capability]
    raise ConfigError(key, value, f"task {task_cls.name!r} {about.lacks}: {key} needs {about.wants} "
                                  f"({about.tasks}){'; ' + hint if hint else ''}")


def _unimplemented(self: Any, name: str) -> NotImplementedError:
    return NotImplementedError(f"task {self.name!r} declares {name} but does not implement it")


class StructuredPruning(Capability, lacks="has no structured pruning of its own",
                        wants="a task that prunes its own structure", tasks="lm, tinylm, smollm2",
                        flag="structured_pruning"):
    """Structured pruning of its own that replaces torch-pruning (LMs: FFN neurons and KV groups)."""

    @required
    def prune_structured(self, model: Any, ratio: float, importance: str, heads: float,
                         multiple_of: int = 1) -> dict[str, float]:
        """Remove `ratio` of the prunable units (ranked by `importance`) and `heads` of the attention groups;
        returns what it kept, as metrics."""
        raise _unimplemented(self, "StructuredPruning.prune_structured")


class KVCache(Capability, lacks="has no KV cache", wants="a language model with one",
              tasks="lm, tinylm, smollm2", flag="kv_cache"):
    """Its ONNX graph takes past key/values besides the plain inputs: `onnx_logits` completes the feeds.

    So its graph is fed by the task alone: static calibration, the JavaScript targets and any other plain-feed
    consumer are refused for it, and the `kvcache` stage can store its cache at a lower precision.
    """

    @required
    def onnx_logits(self, sess: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The logits of the KV-cache graph on plain `feeds` (an empty past, every position)."""
        raise _unimplemented(self, "KVCache.onnx_logits")


class VariableLength(Capability, lacks="has fixed-size inputs", wants="variable-length inputs", tasks="hf, tweets",
                     flag="variable_length"):
    """Inputs are texts that may be padded to their own length: `onnx_batches` and `latency_feeds` honour
    `pad_to='longest'` (see EvalConfig), and latency reports the length it was taken at."""


class Layered(Capability, lacks="cannot drop layers", wants="a layered model",
              tasks="hf, tweets, lm, tinylm, smollm2"):
    """A stack of layers: a smaller student keeps some of them, and each one's hidden state can be matched."""

    @required
    def shrink(self, model: Any, k: int, count: int = 0) -> Any:
        """Keep every k-th layer of `model`, or `count` layers (see `tasks.base.kept_layers`); returns it."""
        raise _unimplemented(self, "Layered.shrink")

    @required
    def hidden_states(self, model: Any, inputs: Any) -> list:
        """Per-layer hidden states of `model` on `inputs` (for hidden-state distillation)."""
        raise _unimplemented(self, "Layered.hidden_states")

    def forward_with_states(self, model: Any, inputs: Any) -> tuple[Any, list]:
        """`forward` and `hidden_states` together (tasks override it to do both in one pass)."""
        return self.forward(model, inputs), self.hidden_states(model, inputs)  # type: ignore[attr-defined]


class Vocabulary(Capability, lacks="has no vocabulary", wants="a task with one", tasks="hf, tweets"):
    """A tokenizer (`tokenizer`, with an `unk_token_id`) and an input embedding table that can be cut."""

    tokenizer: Any

    @required
    def token_ids(self, split: str) -> list[np.ndarray]:
        """Token ids of every example of `split` (what `trim` counts)."""
        raise _unimplemented(self, "Vocabulary.token_ids")

    @required
    def trim_vocab(self, model: Any, keep: np.ndarray) -> Any:
        """Cut `model`'s input vocabulary to the token ids `keep` (plus the special tokens); returns the model."""
        raise _unimplemented(self, "Vocabulary.trim_vocab")


class TransferData(Capability, lacks="has no unlabelled data", wants="a task with some", tasks="hf, tweets"):
    """Unlabelled examples of the task's own data, which a teacher labels for distillation."""

    @required
    def transfer_split(self, n: int) -> str:
        """The name of a split of the train split plus `n` unlabelled examples (label -1) of the same data."""
        raise _unimplemented(self, "TransferData.transfer_split")


class Drafting(Capability, lacks="does not generate text", wants="a language model that drafts",
               tasks="lm, tinylm, smollm2"):
    """Greedy generation from prompts: a node's model drafts for the root's in speculative decoding."""

    @required
    def draft_prompts(self, count: int, length: int) -> list[list[int]]:
        """`count` prompts of `length` consecutive test tokens (fewer if the test split is short)."""
        raise _unimplemented(self, "Drafting.draft_prompts")


class LLMRuntimes(Capability, lacks="is not a causal language model", wants="one that llama.cpp or ONNX Runtime "
                  "GenAI runs", tasks="lm, tinylm, smollm2"):
    """A causal LM that the LLM runtimes run: the `gguf` stage writes it as GGUF for llama.cpp, the `genai` stage
    builds it as an ONNX Runtime GenAI folder, and the `llamacpp` / `genai` targets measure those on the task's
    own test windows, as the task measures its ONNX."""

    @required
    def gguf_tokenizer(self) -> tuple[Any, Any]:
        """The tokenizer the GGUF carries (the one the test windows were made with), and the GGUF it came from
        (its vocabulary is copied as it is: a tokenizer rebuilt from a GGUF loses its pre-tokenizer), or None."""
        raise _unimplemented(self, "LLMRuntimes.gguf_tokenizer")

    @required
    def save_hf(self, model: Any, folder: Any) -> None:
        """`model` and the task's tokenizer as a save_pretrained folder (what the GenAI builder reads)."""
        raise _unimplemented(self, "LLMRuntimes.save_hf")

    @required
    def measure_runtime(self, fmt: str, path: Any, settings: Any, reference: Any) -> dict[str, float]:
        """Every metric of the `fmt` artifact at `path`, named as the task's ONNX metrics (`reference`: the
        root's ONNX)."""
        raise _unimplemented(self, "LLMRuntimes.measure_runtime")

    @classmethod
    def runtime_unsupported(cls, fmt: str, params: Any) -> str | None:
        """Before any compute: why this task's model cannot become a `fmt` artifact (None: it can)."""
        return None


class Rescalable(Capability, lacks="has no input scales to fold", wants="a pre-norm decoder (Llama-style)",
                 tasks="lm, tinylm, smollm2"):
    """Linears whose inputs come from an op that can absorb a per-channel scale (a norm's weight, a Linear's
    rows), so their input columns can be rescaled without changing what the model computes."""

    @required
    def scale_groups(self, model: Any) -> list:
        """`orchestrator.artifacts.awq.ScaleGroup`s of `model`: each producer and the Linears reading it."""
        raise _unimplemented(self, "Rescalable.scale_groups")


__all__ = ["ABOUT", "Capability", "Drafting", "KVCache", "LLMRuntimes", "Layered", "Rescalable", "StructuredPruning",
           "TransferData", "VariableLength", "Vocabulary", "declared", "missing", "require", "supports"]

