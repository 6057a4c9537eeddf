"""`hf`: sequence classification with any local Hugging Face encoder and a local labelled text table.

`task.model` is a model folder (config + weights + tokenizer; a hub id only when the hub is
reachable), `task.dataset` a csv / tsv / json / jsonl / parquet file or a folder of them. The
baseline is the pretrained encoder with a (new or re-sized) classification head, fine-tuned on the
train split. Quality is accuracy and macro F1, computed by the `evaluate` modules in
orchestrator/measure/metrics (loaded by path, so they work offline).

Padding: training batches are padded to their longest example (bucketed by length, for speed);
ONNX feeds, used for scoring and for batch-1 latency, are padded to `max_length`, the fixed input
shape a static deployment sees, so latency does not depend on which example comes first.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import ConfigError
from orchestrator.measure.metrics import classification
from orchestrator.tasks.base import Task
from orchestrator.tasks.capabilities import Layered, TransferData, VariableLength, Vocabulary
from orchestrator.tasks.hf.params import HFParams
from orchestrator.tasks.hf.precision import autocast

KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class HFClassification(Layered, Vocabulary, TransferData, VariableLength, Task):
    """A Hugging Face encoder + classification head on a labelled text table."""

    name = "hf"
    version = "1"
    Params = HFParams
    output_names = ["logits"]

    libraries = ("torch", "transformers", "tokenizers", "numpy")

    @classmethod
    def sources(cls, params: dict[str, Any]) -> dict[str, str]:
        """The model folder and the data file(s): their contents key the baseline, not only their paths."""
        return {"model": params.get("model", ""), "dataset": params.get("dataset", "")}

    @classmethod
    def check(cls, params: Any) -> None:
        """The model folder and the table, opened as far as the baseline would (orchestrator.tasks.hf.checks)."""
        from orchestrator.tasks.hf.checks import check

        check(params, cls.sources(dataclasses.asdict(params)))

    def model_dir(self) -> str:
        """Where the pretrained model and tokenizer are loaded from."""
        return self.params.model

    def data_source(self) -> str:
        """Where the labelled table is loaded from."""
        return self.params.dataset

    @cached_property
    def tokenizer(self) -> Any:
        """The model's tokenizer (loaded once per process)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model_dir())

    @cached_property
    def input_names(self) -> list[str]:  # type: ignore[override]
        """The model inputs the tokenizer produces, in its order (the ONNX graph's input names)."""
        return [n for n in self.tokenizer.model_input_names if n in KNOWN_INPUTS]

    @cached_property
    def _data(self) -> tuple[dict[str, Any], list[str]]:
        """Tokenized splits ('train', 'val', 'test', 'calib') and the class names."""
        from orchestrator.tasks.hf.data import encode, label_ids, split_rows

        params = dataclasses.replace(self.params, dataset=self.data_source())
        rows, names = split_rows(params, self.seed)
        self._pool_texts = rows.pop("pool")[0]  # tokenized only when asked for (token_ids("pool"))
        splits = {s: encode(self.tokenizer, texts, label_ids(labels, names), self.params.max_length,
                            self.input_names) for s, (texts, labels) in rows.items()}
        train = splits["train"]
        n = min(self.params.calib_size, len(train))
        splits["calib"] = dataclasses.replace(train, columns={k: v[:n] for k, v in train.columns.items()},
                                              labels=train.labels[:n])
        return splits, names

    @property
    def class_names(self) -> list[str]:
        """Class names in label-id order."""
        return self._data[1]

    def batches(self, split: str, batch_size: int, shuffle: bool = False) -> Iterator[tuple[Any, Any]]:
        import torch

        from orchestrator.tasks.hf.data import grouped_order

        enc = self._data[0][split]
        if shuffle:  # torch's RNG, which `training.fit` seeds
            order = grouped_order(enc.lengths(), batch_size, torch.randperm(len(enc)).numpy(),
                                  lambda m: torch.randperm(m).numpy())
        else:
            order = (np.arange(i, min(i + batch_size, len(enc))) for i in range(0, len(enc), batch_size))
        for idx in order:
            feeds, labels = enc.batch(idx)
            yield {k: torch.from_numpy(v) for k, v in feeds.items()}, torch.from_numpy(labels)

    def onnx_batches(self, split: str, batch_size: int,
                     pad_to: str = "max_length") -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        enc = self._data[0][split]
        width = self.params.max_length if pad_to == "max_length" else None  # None: each batch's longest
        for i in range(0, len(enc), batch_size):
            yield enc.batch(np.arange(i, min(i + batch_size, len(enc))), pad_to=width)

    def latency_feeds(self, pad_to: str, count: int) -> list[dict[str, np.ndarray]]:
        """max_length: the first test text at the static shape. longest: `count` test texts drawn with the
        task's seed (the same ones for every artifact of a sweep), each at its own length."""
        enc = self._data[0]["test"]
        if pad_to == "max_length":
            return [enc.batch(np.arange(1), pad_to=self.params.max_length)[0]]
        picks = np.random.default_rng(self.seed).choice(len(enc), size=min(count, len(enc)), replace=False)
        return [enc.batch(np.array([i]))[0] for i in picks]

    def forward(self, model: Any, inputs: Any) -> Any:
        with autocast(self.params.train_dtype):
            return model(**inputs).logits.float()

    def hidden_states(self, model: Any, inputs: Any) -> list[Any]:
        """Embedding output + every layer's output, with padded positions zeroed (for hidden-state KD)."""
        return self.forward_with_states(model, inputs)[1]

    def forward_with_states(self, model: Any, inputs: Any) -> tuple[Any, list[Any]]:
        """Logits and hidden states (as `hidden_states`) of one forward pass."""
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        with autocast(self.params.train_dtype):
            out = model(**inputs, output_hidden_states=True)
        return out.logits.float(), [h.float() * mask for h in out.hidden_states]

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:  # type: ignore[override]
        """A padded batch from the test split, as keyword inputs (torch-pruning calls model(**inputs))."""
        import torch

        enc = self._data[0]["test"]
        feeds, _ = enc.batch(np.arange(min(batch_size, len(enc))), pad_to=self.params.max_length)
        return {k: torch.from_numpy(v) for k, v in feeds.items()}

    def score(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return classification(logits.argmax(-1), labels, len(self.class_names))

    def build_baseline(self) -> Any:
        import torch
        import transformers

        from orchestrator.artifacts.training import fit

        transformers.logging.set_verbosity_error()  # "newly initialized classifier" is expected here
        names = self.class_names
        torch.manual_seed(self.seed)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            self.model_dir(), num_labels=len(names), id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True)
        p = self.params
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and p.max_length > positions:
            raise ConfigError("task.max_length", p.max_length, f"this model reads at most {positions} tokens")
        return fit(self, model, p.epochs, p.lr, p.batch_size, seed=self.seed, log=_log).eval()

    def architecture_spec(self, model: Any) -> dict[str, Any]:
        """The model's config (layer count after shrinking, pruned linear shapes) as plain data."""
        return {"config": model.config.to_dict()}

    def architecture(self, spec: dict[str, Any]) -> Any:
        from orchestrator.tasks.hf.model import from_spec

        return from_spec(spec)

    def protected_modules(self, model: Any) -> list:
        from orchestrator.tasks.hf.model import protected

        return protected(model)

    def pruning_kwargs(self, model: Any, ratio: float) -> dict[str, Any]:
        from orchestrator.tasks.hf.model import pruning_kwargs

        return pruning_kwargs(model, ratio)

    def after_prune(self, model: Any) -> Any:
        from orchestrator.tasks.hf.model import fix_attributes

        return fix_attributes(model)

    def shrink(self, model: Any, k: int, count: int = 0) -> Any:
        from orchestrator.tasks.hf.model import shrink

        return shrink(model, k, count)

    def token_ids(self, split: str) -> list[np.ndarray]:
        """The tokenizer's ids of every example of `split` (truncated to max_length, unpadded); 'pool' is
        the train split's texts beyond `train_size` plus the train split itself (unlabelled text)."""
        if split == "pool":
            return self.token_ids("train") + list(self._pool.columns["input_ids"])
        return list(self._data[0][split].columns["input_ids"])

    def transfer_split(self, n: int) -> str:
        """'train' plus the first `n` texts of the pool (the train split's texts `train_size` left out), label -1."""
        from orchestrator.tasks.hf.data import joined

        if n == 0:
            return "train"
        name, splits = f"train+pool{n}", self._data[0]
        if name not in splits:
            if len(self._pool) < n:
                raise ValueError(f"stages.distill.transfer={n}: the data has only {len(self._pool)} "
                                 "unlabelled texts beyond task.train_size")
            splits[name] = joined(splits["train"], self._pool, n)
        return name

    @cached_property
    def _pool(self) -> Any:
        """The pool's texts, encoded like every split with label -1 (only when trim or distill asks)."""
        from orchestrator.tasks.hf.data import encode

        _ = self._data  # splitting the data sets _pool_texts
        texts = self._pool_texts
        return encode(self.tokenizer, texts, np.full(len(texts), -1, dtype=np.int64), self.params.max_length,
                      self.input_names)

    def trim_vocab(self, model: Any, keep: np.ndarray) -> Any:
        """Cut the embedding table to the original token ids `keep` plus the special tokens (see hf_vocab)."""
        from orchestrator.tasks.hf.vocab import trim_with

        return trim_with(self.tokenizer, model, keep, self.model_dir())

    def export(self, model: Any, path: Path, opset: int, exporter: str) -> None:
        from orchestrator.tasks.hf.export import export

        export(model, path, opset, exporter, self.example_inputs(), self.input_names, log=_log)


def _log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)
