"""`lm`: causal language modelling with any local Hugging Face decoder (a folder or a .gguf file).

The contract of Task, with token windows for examples (see lm_data): `batches` yields input ids of
shape (batch, context) and their next-token labels flattened to (batch * context,), and `forward`
returns logits flattened the same way, (batch * context, vocab). So the shared training loop, the
KD loss and top-1 agreement work on tokens exactly as they work on classified examples, and the
stages stay generic. What differs for LMs lives here: scoring is perplexity (see lm_measure), the
ONNX graph carries a KV cache (`onnx_logits` completes its feeds, see lm/feeds), and pruning removes FFN neurons
and grouped-query heads (see lm_model) instead of torch-pruning channels.

The baseline is the model as loaded, optionally fine-tuned on `train_tokens` tokens of the train split.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import check_choice, check_range
from orchestrator.tasks.base import Task
from orchestrator.tasks.capabilities import Drafting, KVCache, Layered, LLMRuntimes, Rescalable, StructuredPruning
from orchestrator.tasks.hf.data import check_source
from orchestrator.tasks.lm.feeds import complete_feeds
from orchestrator.tasks.lm.spec_target import SpeculativeTarget
from orchestrator.tasks.quality import RATIO, Columns, Quality


@dataclass
class LMParams:
    """model: a save_pretrained folder or a .gguf file; dataset: '' (the stdlib pydoc corpus), a text file,
    a table with `text_column`, or a folder of train.* / test.* files.

    context: tokens per window (the perplexity context; windows do not overlap). eval_tokens: test tokens
    scored (0 = the whole test split). train_tokens: baseline fine-tune budget in tokens (0 = as loaded).
    calib_windows: training windows used for activation statistics (pruning importance).
    """

    name: str = "lm"
    model: str = ""
    dataset: str = ""
    text_column: str = "text"
    context: int = 256
    eval_tokens: int = 0
    train_tokens: int = 0
    lr: float = 1e-4
    batch_size: int = 4
    calib_windows: int = 16
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.check_sources()
        check_range("context", self.context, 8, 32768)
        check_range("eval_tokens", self.eval_tokens, 0, 10**9)
        check_range("train_tokens", self.train_tokens, 0, 10**12)
        check_range("lr", self.lr, 0, 1, lo_open=True)
        check_range("batch_size", self.batch_size, 1, 4096)
        check_range("calib_windows", self.calib_windows, 1, 100000)
        check_choice("dtype", self.dtype, ["float32"])

    def check_sources(self) -> None:
        """A model folder or .gguf file must exist (hub ids only when online); so must a given dataset."""
        check_source("model", self.model, "model directory or .gguf file")
        self.check_dataset()

    def check_dataset(self) -> None:
        """A given corpus must exist ('' = the built-in pydoc corpus)."""
        if self.dataset:
            check_source("dataset", self.dataset, "text file, table or folder")


# Perplexity, lower is better; a loss is its ratio to the baseline's; 1.5x is a collapsed model.
PERPLEXITY = Quality("perplexity", False, RATIO, "ppl", "{:.4g}", collapse=1.5)
# bits per byte beside perplexity, per-token latency, and the decoding columns
LM_COLUMNS = Columns(
    swap={"f1": ("bits_per_byte", "bits/byte", "{:.4f}"), "latency_p50_ms": ("latency_p50_ms", "ms/token", "{:.4g}"),
          "latency_cv": ("decode_latency_p90_ms", "p90 ms/token", "{:.4g}")},
    extra=(("prefill_ms", "prefill ms", "{:.4g}"), ("decode_tokens_per_s", "tok/s", "{:.4g}"),
           ("kv_cache_mb_per_1k_tokens", "KV MB/1k tok", "{:.4g}"), ("kv_agreement", "KV agree", "{:.3f}")),
    legend="ms/token = one greedy decoding step at batch 1 with the KV cache")


class LMTask(KVCache, Drafting, StructuredPruning, Layered, LLMRuntimes, Rescalable, Task):
    """A causal LM on a text corpus: perplexity, agreement with the baseline, and decoding speed."""

    name = "lm"
    version = "1"
    Params = LMParams
    libraries = ("torch", "transformers", "tokenizers", "numpy", "gguf")
    input_names = ["input_ids"]
    output_names = ["logits"]
    quality = PERPLEXITY
    columns = LM_COLUMNS
    check_examples = 2
    targets = (SpeculativeTarget,)

    @classmethod
    def sources(cls, params: dict[str, Any]) -> dict[str, str]:
        """The model folder or file and the corpus: their contents key the baseline."""
        return {"model": params.get("model", ""), "dataset": params.get("dataset", "")}

    @classmethod
    def check(cls, params: Any) -> None:
        """The model and the corpus, opened as far as the baseline would (orchestrator.tasks.lm.checks)."""
        from dataclasses import asdict

        from orchestrator.tasks.lm.checks import check

        check(params, cls.sources(asdict(params)))

    def model_source(self) -> str:
        """Where the pretrained model is loaded from."""
        return self.params.model

    @cached_property
    def tokenizer(self) -> Any:
        """The model's tokenizer (once per process)."""
        from orchestrator.tasks.lm.model import load_tokenizer

        return load_tokenizer(self.model_source())

    @cached_property
    def documents(self) -> dict[str, list[str]]:
        """The corpus split into train / val / test documents."""
        from orchestrator.tasks.lm.data import load_splits

        return load_splits(self.params.dataset, self.params.text_column)

    @cached_property
    def splits(self) -> dict[str, Any]:
        """Token windows per split ('calib' = the first `calib_windows` training windows)."""
        from orchestrator.tasks.lm.data import Windows, windows

        p, docs = self.params, self.documents
        out = {"train": windows(self.tokenizer, docs["train"], p.context),
               "val": windows(self.tokenizer, docs["val"], p.context),
               "test": windows(self.tokenizer, docs["test"], p.context, p.eval_tokens)}
        out["calib"] = Windows(out["train"].ids[:p.calib_windows], 0)
        return out

    def batches(self, split: str, batch_size: int, shuffle: bool = False) -> Iterator[tuple[Any, Any]]:
        import torch

        ids = self.splits[split].ids
        order = torch.randperm(len(ids)).numpy() if shuffle else np.arange(len(ids))  # fit() seeds torch
        for i in range(0, len(ids), batch_size):
            rows = torch.from_numpy(ids[order[i:i + batch_size]])
            yield {"input_ids": rows[:, :-1].contiguous()}, rows[:, 1:].reshape(-1)

    def onnx_batches(self, split: str, batch_size: int,
                     pad_to: str = "max_length") -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        ids = self.splits[split].ids
        for i in range(0, len(ids), batch_size):
            rows = ids[i:i + batch_size]
            yield {"input_ids": np.ascontiguousarray(rows[:, :-1])}, rows[:, 1:].reshape(-1)

    def forward(self, model: Any, inputs: Any) -> Any:
        logits = model(**inputs, use_cache=False).logits
        return logits.reshape(-1, logits.shape[-1]).float()

    def hidden_states(self, model: Any, inputs: Any) -> list[Any]:
        """Embedding output + every decoder layer's output (for hidden-state KD)."""
        return list(model(**inputs, use_cache=False, output_hidden_states=True).hidden_states)

    def onnx_logits(self, sess: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Logits (tokens, vocab) of the KV-cache graph on full windows: an empty past, every position."""
        out = sess.run(["logits"], complete_feeds(sess, feeds["input_ids"]))[0]
        return out.reshape(-1, out.shape[-1])

    def draft_prompts(self, count: int, length: int) -> list[list[int]]:
        """`count` prompts of `length` consecutive test tokens (fewer if the test split is short)."""
        stream = self.splits["test"].ids.reshape(-1)
        return [stream[i * length:(i + 1) * length].tolist() for i in range(min(count, len(stream) // length))]

    def example_inputs(self, batch_size: int = 1) -> tuple:
        inputs, _ = next(self.batches("test", batch_size))
        return (inputs,)

    def score(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        from orchestrator.tasks.lm.measure import nll

        total = nll(logits, labels)
        return {"perplexity": float(np.exp(total / len(labels)))}

    def measure_onnx(self, path: Path, settings: Any, reference: Path | None) -> dict[str, float]:
        from orchestrator.tasks.lm.measure import measure

        return measure(self, path, settings, reference)

    @classmethod
    def baseline_warnings(cls, metrics: dict[str, float]) -> list[str]:
        bpb, gz = metrics.get("bits_per_byte"), metrics.get("gzip_bits_per_byte")
        if bpb is None or gz is None or bpb < gz:
            return []
        return [f"WARNING: the baseline codes the test text in {bpb:.2f} bits per byte, no better than gzip -9 "
                f"({gz:.2f}): implausible for a language model of text. Check the model's tokenizer (a GGUF's "
                "rebuilt by transformers can differ from its own) and weights before trusting any number here."]

    def gguf_tokenizer(self) -> tuple[Any, Path | None]:
        source = Path(self.model_source()) if self.model_source().endswith(".gguf") else None
        return self.tokenizer, source

    def save_hf(self, model: Any, folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)

    def measure_runtime(self, fmt: str, path: Path, settings: Any, reference: Path | None) -> dict[str, float]:
        from orchestrator.tasks.lm.runtimes import measure

        return measure(self, fmt, path, settings, reference)

    @classmethod
    def runtime_unsupported(cls, fmt: str, params: Any) -> str | None:
        from orchestrator.tasks.lm.runtimes import unsupported

        return unsupported(fmt, cls.sources(vars(params)).get("model", ""))

    def load_pretrained(self) -> Any:
        """The model before any fine-tune."""
        from orchestrator.tasks.lm.model import load_pretrained

        return load_pretrained(self.model_source(), self.params.dtype)

    def build_baseline(self) -> Any:
        import torch

        from orchestrator.artifacts.training import fit

        torch.manual_seed(self.seed)
        model = self.load_pretrained()
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and self.params.context > positions:
            from orchestrator.errors import ConfigError

            raise ConfigError("task.context", self.params.context, f"this model reads at most {positions} tokens")
        p = self.params
        if p.train_tokens:
            fit(self, model, 1, p.lr, p.batch_size, seed=self.seed, log=_log, tokens=p.train_tokens)
        return model.eval()

    def architecture_spec(self, model: Any) -> dict[str, Any]:
        """The config (pruned widths, head and layer counts included) as plain data."""
        return {"config": model.config.to_dict()}

    def architecture(self, spec: dict[str, Any]) -> Any:
        from orchestrator.tasks.lm.model import from_spec

        return from_spec(spec)

    def protected_modules(self, model: Any) -> list:
        """Embeddings and the LM head: pruning keeps the vocabulary and the hidden width."""
        return [m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None]

    def prune_structured(self, model: Any, ratio: float, importance: str, heads: float,
                         multiple_of: int = 1) -> dict[str, float]:
        """Remove `ratio` of the FFN neurons per layer (by `importance`) and `heads` of the KV groups."""
        from orchestrator.tasks.lm import model as lm_model

        acts = None
        if importance in ("activation", "mix"):
            calib = [inputs for inputs, _ in self.batches("calib", self.params.batch_size)]
            acts = lm_model.ffn_activations(model, calib)
        ffn = lm_model.prune_ffn(model, ratio, lm_model.ffn_importance(model, importance, acts), multiple_of)
        kv = lm_model.prune_kv_groups(model, heads) if heads else model.config.num_key_value_heads
        return {"ffn_kept": float(ffn), "kv_heads_kept": float(kv)}

    def shrink(self, model: Any, k: int, count: int = 0) -> Any:
        from orchestrator.tasks.lm.model import shrink

        return shrink(model, k, count)

    def scale_groups(self, model: Any) -> list:
        from orchestrator.tasks.lm.model import scale_groups

        return scale_groups(model)

    def export(self, model: Any, path: Path, opset: int, exporter: str) -> None:
        from orchestrator.tasks.lm.model import export_with_past

        # at least 18: optimum's minimum for Llama-style decoders, and int4 of the embedding table lifts the
        # graph to opset 21, where an opset-17 ReduceMean (axes as an attribute) no longer loads
        export_with_past(model, path, max(opset, 18))


def _log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)
