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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import ConfigError, check_choice, check_range
from orchestrator.measure.metrics import classification
from orchestrator.tasks.base import Task
from orchestrator.tasks.hf.data import check_source
from orchestrator.tasks.hf.precision import DTYPES, autocast, resolve

KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class HFParams:
    """Model, data, splits and the baseline fine-tune.

    Splits: `train_split` / `val_split` / `test_split` name the data's splits; a missing val or test
    split is carved out of train with a seeded permutation (test: `test_size` rows, else a fifth).
    `*_size` > 0 keeps a seeded random subset of that many rows. `labels` fixes the class order
    (default: sorted distinct training labels). Texts are truncated to `max_length` tokens.
    `train_dtype: bfloat16` runs training forward passes under CPU autocast (weights stay float32;
    2-3x faster on CPUs with AVX512-BF16/AMX, slower without); `auto` picks it where the CPU has them
    (see tasks/hf/precision); evaluation is always float32.
    """

    name: str = "hf"
    model: str = ""
    dataset: str = ""
    text_column: str = "text"
    label_column: str = "label"
    labels: list = field(default_factory=list)
    encoding: str = "utf-8"
    train_split: str = "train"
    val_split: str = "validation"
    test_split: str = "test"
    train_size: int = 0
    val_size: int = 0
    test_size: int = 0
    drop_duplicates: bool = False
    max_length: int = 64
    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 32
    calib_size: int = 256
    train_dtype: str = "auto"

    def __post_init__(self) -> None:
        self.check_sources()
        check_choice("train_dtype", self.train_dtype, DTYPES)
        self.train_dtype = resolve(self.train_dtype)  # before the baseline is keyed: the key names what trains
        check_range("max_length", self.max_length, 2, 8192)
        check_range("epochs", self.epochs, 0, 1000)
        check_range("lr", self.lr, 0, 1, lo_open=True)
        check_range("batch_size", self.batch_size, 1, 65536)
        check_range("calib_size", self.calib_size, 1, 1000000)
        for key in ("train_size", "val_size", "test_size"):
            check_range(key, getattr(self, key), 0, 10**9)
        if not isinstance(self.labels, list):
            raise ConfigError("labels", self.labels, "must be a list of class names (or empty)")

    def check_sources(self) -> None:
        """Local paths must exist; hub ids are refused when offline (fail before any compute)."""
        check_source("model", self.model, "model directory")
        check_source("dataset", self.dataset, "data file or folder")


class HFClassification(Task):
    """A Hugging Face encoder + classification head on a labelled text table."""

    name = "hf"
    version = "1"
    Params = HFParams
    output_names = ["logits"]

    libraries = ("torch", "transformers", "tokenizers", "numpy")
    variable_length = True

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
