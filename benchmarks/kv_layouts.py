"""Compare KV-cache layouts on one LM: one-pass perplexity and the measured cache size per 1k tokens.

Exports the task's baseline once, rewrites it with each layout of the `kvcache` stage (per-token scales,
per-channel key groups, full-precision windows) and scores every file the way the LM task measures a node
(`tasks/lm/measure`: `quality` on the test windows, `kv_cache_mb_per_1k_tokens` from the tensors a
128-token prompt leaves in the cache). Usage:

    python benchmarks/kv_layouts.py --task tinylm [--train-tokens 400000]
    python benchmarks/kv_layouts.py --task smollm2 [--eval-tokens 4096] [--only "int4 (per token)" ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

LAYOUTS: dict[str, dict[str, Any] | None] = {
    "fp32": None,
    "fp16": {"dtype": "fp16"},
    "int8": {"dtype": "int8"},
    "int4 (per token)": {"dtype": "int4"},
    "int4 channel, group 32": {"dtype": "int4", "key_grouping": "channel"},
    "int4 per token, residual 32": {"dtype": "int4", "residual": 32},
    "int4 channel, group 32, residual 32": {"dtype": "int4", "key_grouping": "channel", "residual": 32},
    "int4 channel, group 32, residual 128": {"dtype": "int4", "key_grouping": "channel", "residual": 128},
    "int4 channel, group 32, asymmetric": {"dtype": "int4", "key_grouping": "channel", "symmetric": False},
    "int4 channel, group 32, asymmetric, residual 32": {"dtype": "int4", "key_grouping": "channel",
                                                         "symmetric": False, "residual": 32},
}


def _task(name: str, train_tokens: int, eval_tokens: int) -> Any:
    if name == "tinylm":
        from orchestrator.tasks.lm.tinylm import TinyLM, TinyLMParams

        return TinyLM(TinyLMParams(train_tokens=train_tokens, eval_tokens=eval_tokens), seed=0)
    from orchestrator.tasks.lm.smollm2 import SmolLM2, SmolLM2Params

    return SmolLM2(SmolLM2Params(eval_tokens=eval_tokens), seed=0)


def main() -> None:
    """Print one markdown row per layout."""
    import onnx

    from orchestrator.measure.probe import session
    from orchestrator.stages.kvcache import KVCacheParams, rewrite
    from orchestrator.tasks.lm.measure import quality, speed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("tinylm", "smollm2"), default="tinylm")
    parser.add_argument("--train-tokens", type=int, default=400_000, help="tinylm's training budget")
    parser.add_argument("--eval-tokens", type=int, default=0, help="test tokens scored (0 = the whole split)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None,
                        help="layouts to measure, by their exact label (default: all; fp32 is always measured)")
    args = parser.parse_args()
    task = _task(args.task, args.train_tokens, args.eval_tokens)
    folder = Path(tempfile.mkdtemp())
    base = folder / "base.onnx"
    task.export(task.build_baseline(), base, 17, "torchscript")
    print("| KV cache | perplexity | KV MB/1k tokens |\n|---|---|---|")
    for i, (label, layout) in enumerate(LAYOUTS.items()):
        if args.only is not None and layout is not None and label not in args.only:
            continue
        path = base
        if layout is not None:
            params = KVCacheParams(**layout)
            model = onnx.load(str(base))
            rewrite(model, params.dtype, params)
            path = folder / f"layout{i}.onnx"
            onnx.save(model, str(path))
        sess = session(path, args.threads)
        ppl = quality(task, sess, None)[0]["perplexity"]
        print(f"| {label} | {ppl:.2f} | {speed(task, sess)['kv_cache_mb_per_1k_tokens']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
