"""The training dtype of Hugging Face encoders: `auto` resolved from what this CPU computes bfloat16 in.

bf16 autocast trains 2-3x faster than float32 where the CPU has bf16 instructions (AVX512-BF16, AMX); where it
has not, torch emulates bf16 and training runs several times slower than float32 (a tweets baseline: over 15
minutes against ~8). `auto` is resolved when the task params are built, before the baseline's key is taken, so
the key names the dtype that trains: on a bf16 CPU it equals the key of an explicit `bfloat16`.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path
from typing import Any

DTYPES = ("auto", "float32", "bfloat16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs that compute bf16 natively
_said: set[str] = set()


@functools.cache
def cpu_bf16() -> str | None:
    """The bf16 flag this CPU reports (avx512_bf16 or amx_bf16), or None (also where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return next((f for f in BF16_FLAGS if f in flags), None)


def resolve(train_dtype: str) -> str:
    """The dtype training runs in: `auto` -> bfloat16 on a CPU with bf16 instructions, else float32 (said once
    per process); an explicit bfloat16 on a CPU without them runs, with a warning (once)."""
    flag = cpu_bf16()
    if train_dtype == "auto":
        chosen = "bfloat16" if flag else "float32"
        why = (f"this CPU has {flag}: bf16 autocast trains 2-3x faster" if flag else
               "this CPU has neither AVX512-BF16 nor AMX, so bf16 would be emulated, several times slower")
        _once(f"note: task.train_dtype=auto trains in {chosen} ({why})")
        return chosen
    if train_dtype == "bfloat16" and not flag:
        _once("warning: task.train_dtype=bfloat16 on a CPU without AVX512-BF16 or AMX: torch emulates bf16 here, "
              "and training runs several times slower than float32 (task.train_dtype=auto or float32 avoids it)")
    return train_dtype


def _once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        print(message, file=sys.stderr, flush=True)


def autocast(train_dtype: str) -> Any:
    """bf16 autocast while training (gradients on) when asked; float32 for every measurement."""
    import torch

    if train_dtype == "bfloat16" and torch.is_grad_enabled():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
