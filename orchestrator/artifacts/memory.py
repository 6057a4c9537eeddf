"""A process's own peak memory, the way every measuring child reports it (ONNX Runtime's probe, llama.cpp's)."""

from __future__ import annotations

import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (10^6 bytes).

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory. Not getrusage's
    ru_maxrss: that survives exec, so a child forked from the sweep (torch loaded, hundreds of MB) would
    report the parent's size. Elsewhere ru_maxrss is the best there is.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6  # bytes on macOS, KiB on Linux
