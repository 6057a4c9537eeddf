"""Does transformers tokenize a GGUF model's text the way the GGUF's own tokenizer (llama.cpp, Ollama) does?

Run before any compute for every `.gguf` model an LM task reads (orchestrator.tasks.lm.checks), in a child
process because the checks import neither torch nor transformers: the tokenizer transformers rebuilds from a
GGUF can lack the GGUF's pre-tokenizer (SmolLM2: whitespace before a digit, 0.3% of ids differ) or come out
broken (a perplexity 30x too high, and nothing said so). Prints one JSON line: the share of test-text ids the
two agree on (`agreement`, see orchestrator.tasks.lm.runtimes.token_agreement), both counts and what the GGUF's
vocabulary says about BOS.

    python -m orchestrator.tasks.lm.tokcheck MODEL.gguf DATASET TEXT_COLUMN
"""

from __future__ import annotations

import json
import sys


def compare(model: str, dataset: str, column: str) -> dict[str, object]:
    """Both tokenizations of the test split's text, compared."""
    from orchestrator.artifacts.llamacpp import tokenize
    from orchestrator.tasks.lm.data import JOIN, load_splits
    from orchestrator.tasks.lm.model import load_tokenizer
    from orchestrator.tasks.lm.runtimes import token_agreement

    text = JOIN.join(load_splits(dataset, column)["test"])
    theirs = tokenize(model, text)  # first: a file llama.cpp cannot load fails here, before transformers loads
    ours = load_tokenizer(model)(text, add_special_tokens=False)["input_ids"]
    return {"agreement": token_agreement(ours, theirs["ids"]), "transformers_ids": len(ours),
            "gguf_ids": len(theirs["ids"]), "add_bos": theirs["add_bos"], "bos_id": theirs["bos_id"]}


if __name__ == "__main__":
    print(json.dumps(compare(*sys.argv[1:4])))
