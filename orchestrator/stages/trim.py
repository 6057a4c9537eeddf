"""`trim`: vocabulary trimming, torch -> torch, for tasks with a tokenizer (Hugging Face encoders).

Counts the tokens of the task's training split and keeps the special tokens plus the tokens that occur
there: all of them (`min_count` times or more), the `top_k` most frequent, or the most frequent ones that
cover `coverage` of all token occurrences. The embedding table is cut to those rows; every other token
reads the `[UNK]` row. The id map is part of the model (see orchestrator/tasks/hf/vocab.py), so later
stages, the export and every measurement keep using the task's tokenizer and can never feed old ids to
the trimmed table. Only the training split decides what is kept; the test split measures the cost:

- `vocab_before` / `vocab_after`: embedding rows before and after;
- `embedding_params_removed`: rows removed x the embedding width;
- `oov_test_token_frac`: the share of test tokens that now read `[UNK]` (they did not before);
- `test_texts_all_kept_frac`: the share of test texts none of whose tokens was dropped (on those the
  trimmed model computes exactly what the untrimmed one did).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import check_choice, check_range
from orchestrator.stages.base import TORCH, Stage, StageContext, StageOutput


@dataclass
class TrimParams:
    """Which training tokens to keep (the special tokens always stay).

    min_count: keep tokens seen at least this often; top_k > 0: at most the k most frequent of those;
    coverage < 1: the fewest most frequent tokens that cover this share of the training token occurrences.
    corpus: train = the labelled train split; pool = the train split plus the texts of the training data
    that `task.train_size` left unlabelled (more of the domain's words, still no val or test text).
    """

    min_count: int = 1
    top_k: int = 0
    coverage: float = 1.0
    corpus: str = "train"

    def __post_init__(self) -> None:
        check_range("min_count", self.min_count, 1, 10**9)
        check_range("top_k", self.top_k, 0, 10**9)
        check_range("coverage", self.coverage, 0.0, 1.0, lo_open=True)
        check_choice("corpus", self.corpus, ["train", "pool"])


def choose(counts: dict[int, int], min_count: int, top_k: int, coverage: float) -> list[int]:
    """Token ids to keep, most frequent first (ties by id, so the choice is deterministic)."""
    ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    if top_k:
        ranked = ranked[:top_k]
    if coverage < 1.0:
        total, running = sum(counts.values()), 0
        for i, token in enumerate(ranked):
            running += counts[token]
            if running >= coverage * total:
                return ranked[:i + 1]
    return ranked


class Trim(Stage):
    """Cut the input embedding to the tokens the training data uses; report what the test data loses."""

    name = "trim"
    version = "1"
    consumes = TORCH
    produces = TORCH
    Params = TrimParams
    libraries = ("torch", "transformers", "tokenizers")

    @classmethod
    def check_task(cls, params: TrimParams, task_cls: type) -> None:
        """Only tasks with a vocabulary (a tokenizer and an embedding table) take the stage, before any compute."""
        from orchestrator.tasks.capabilities import Vocabulary, require

        require(task_cls, Vocabulary, "stages.trim", cls.name)

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        import numpy as np

        from orchestrator.tasks.hf.vocab import id_map

        p, task = self.params, ctx.task
        ids, counts = np.unique(np.concatenate(task.token_ids(p.corpus)), return_counts=True)
        keep = choose(dict(zip(ids.tolist(), counts.tolist(), strict=True)), p.min_count, p.top_k, p.coverage)
        before = id_map(model)
        rows_before = model.get_input_embeddings().num_embeddings
        model = task.trim_vocab(model, np.asarray(keep, dtype=np.int64))
        after, emb = id_map(model), model.get_input_embeddings()
        unk = task.tokenizer.unk_token_id
        # a test token is lost when it now reads [UNK]'s row but did not before
        lost = [(after[t] == after[unk]) & (before[t] != before[unk]) for t in task.token_ids("test")]
        tokens = sum(len(x) for x in lost)
        metrics = {"vocab_before": float(rows_before), "vocab_after": float(emb.num_embeddings),
                   "embedding_params_removed": float((rows_before - emb.num_embeddings) * emb.embedding_dim),
                   "oov_test_token_frac": float(sum(int(x.sum()) for x in lost)) / max(tokens, 1),
                   "test_texts_all_kept_frac": float(np.mean([not x.any() for x in lost])) if lost else 1.0}
        ctx.log(f"trim: vocabulary {rows_before} -> {emb.num_embeddings} rows, "
                f"{metrics['oov_test_token_frac']:.2%} of test tokens now [UNK]")
        return StageOutput(model.eval(), metrics)
