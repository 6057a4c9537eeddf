"""`tinylm`: a ~1M-parameter Llama trained from scratch on the stdlib's pydoc corpus (the fast LM for tests).

Everything it needs ships with Python and the `text` extra, so it runs offline in minutes: a byte-level
BPE tokenizer of `vocab_size` tokens trained on the corpus' train split (deterministic: the same
tokenizer for the same corpus), and a Llama decoder with grouped-query attention and tied embeddings
(the shape of SmolLM2, scaled down) trained for `train_tokens` tokens. Its perplexity is high (a model
this small on ~116k training tokens), but every stage, measurement and order runs on it as on a real LLM.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from orchestrator.errors import ConfigError, check_range
from orchestrator.tasks.lm.task import LMParams, LMTask

EOS = "<|endoftext|>"


@dataclass
class TinyLMParams(LMParams):
    """The LM params (model must stay ''), plus the tokenizer and architecture sizes of the model trained here."""

    name: str = "tinylm"
    vocab_size: int = 2048
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 352
    train_tokens: int = 1_200_000
    lr: float = 3e-3
    batch_size: int = 8

    def check_sources(self) -> None:
        if self.model:
            raise ConfigError("task.model", self.model, "tinylm trains its own model; use task=lm for a given one")
        self.check_dataset()  # (the inherited check would also demand a model, which tinylm trains itself)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("vocab_size", self.vocab_size, 300, 65536)
        for key in ("hidden_size", "layers", "heads", "kv_heads", "ffn"):
            check_range(key, getattr(self, key), 1, 65536)
        if self.heads % self.kv_heads or self.hidden_size % self.heads:
            raise ConfigError("task.kv_heads", self.kv_heads, f"heads ({self.heads}) must be a multiple of kv_heads "
                              f"and hidden_size ({self.hidden_size}) a multiple of heads")


class TinyLM(LMTask):
    """A small Llama and its BPE tokenizer, both trained here on the pydoc corpus."""

    name = "tinylm"
    version = "1"
    Params = TinyLMParams
    libraries = ("torch", "transformers", "tokenizers", "numpy")

    @classmethod
    def sources(cls, params: dict[str, Any]) -> dict[str, str]:
        return {"dataset": params.get("dataset", "")}

    @cached_property
    def tokenizer(self) -> Any:
        """Byte-level BPE trained on the train split (byte-level: every text encodes, nothing is unknown)."""
        from tokenizers import ByteLevelBPETokenizer
        from transformers import PreTrainedTokenizerFast

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(self.documents["train"], vocab_size=self.params.vocab_size, min_frequency=2,
                                special_tokens=[EOS], show_progress=False)
        return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=EOS, bos_token=EOS)

    def load_pretrained(self) -> Any:
        """A freshly initialised Llama (seeded by build_baseline), sized by the params."""
        from transformers import LlamaConfig, LlamaForCausalLM

        p = self.params
        config = LlamaConfig(vocab_size=len(self.tokenizer), hidden_size=p.hidden_size, intermediate_size=p.ffn,
                             num_hidden_layers=p.layers, num_attention_heads=p.heads, num_key_value_heads=p.kv_heads,
                             max_position_embeddings=max(512, p.context), tie_word_embeddings=True,
                             bos_token_id=self.tokenizer.bos_token_id, eos_token_id=self.tokenizer.eos_token_id)
        return LlamaForCausalLM(config).eval()
