"""Decode speed of GGUF files in llama.cpp, interleaved and repeated, so that files of the same size and tensor
types can be told apart from run-to-run noise (one measurement of a leaf moves by about ±10% on a shared
2-core machine).

Each round measures every file once, in a fresh llama.cpp child (orchestrator.artifacts.llamacpp): a prompt of
128 ids, a warm-up, then `--steps` greedy steps at `--threads`; the files take turns, so a slow spell of the
machine hits them all. Printed: per file the median decode tokens/s over the rounds, its spread, the tensor
types it holds, and the ratio to the first file's median. Usage (the nodes of a sweep lie in the cache):

    python benchmarks/gguf_speed.py Q4_0=.cache/orchestrator/nodes/<key>/model.gguf \\
        Q4_0-imatrix=.cache/orchestrator/nodes/<key>/model.gguf --rounds 5
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
from pathlib import Path


def tensor_types(path: Path) -> str:
    """`Q4_0 x168, Q8_0 x1, F32 x61`: the GGUF's tensors counted by type (gguf-py, no runtime)."""
    import gguf

    counts = collections.Counter(gguf.GGMLQuantizationType(t.tensor_type).name
                                 for t in gguf.GGUFReader(str(path)).tensors)
    return ", ".join(f"{k} x{v}" for k, v in counts.most_common())


def decode_tokens_per_s(path: Path, prompt: list[int], steps: int, threads: int, work: Path) -> float:
    """One fresh child: greedy steps after `prompt`, tokens per second over the timed steps."""
    import numpy as np

    from orchestrator.artifacts import llamacpp

    windows = work / "w.npy"
    np.save(windows, np.asarray([prompt[:2]], dtype=np.int32))
    out = llamacpp.measure_child({"model": str(path), "threads": threads, "windows": str(windows), "prompt": prompt,
                                  "decode_steps": steps, "warmup_steps": 8, "prefill_repeats": 1,
                                  "out_dir": str(work)}, 600)
    return len(out["decode_ms"]) / (sum(out["decode_ms"]) / 1e3)


def main() -> None:
    """Print one markdown row per file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="LABEL=PATH of each GGUF (the first is the reference)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    files = dict(f.split("=", 1) for f in args.files)
    prompt = [(i * 7919) % 1000 + 10 for i in range(128)]  # ids valid in any vocabulary of 1k+ tokens
    speeds: dict[str, list[float]] = {label: [] for label in files}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for label, path in files.items():
                speeds[label].append(decode_tokens_per_s(Path(path), prompt, args.steps, args.threads, Path(tmp)))
    ref = statistics.median(speeds[next(iter(files))])
    print(f"| file | tensor types | decode tok/s (median of {args.rounds}) | min - max | x first |")
    print("|---|---|---|---|---|")
    for label, path in files.items():
        s = speeds[label]
        print(f"| {label} | {tensor_types(Path(path))} | {statistics.median(s):.1f} | {min(s):.1f} - {max(s):.1f} "
              f"| {statistics.median(s) / ref:.3f} |")


if __name__ == "__main__":
    main()
