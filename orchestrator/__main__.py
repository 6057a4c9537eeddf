"""Command-line entry: `python -m orchestrator +recipe=NAME [overrides]` (Hydra's Compose API over conf/ + recipes/)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Compose and validate the config, then plan, execute and report one sweep.

    Returns the exit code: 0 every node succeeded, 1 some node failed, 2 bad input (one line, no traceback).
    """
    from orchestrator.config.cli import USAGE, load
    from orchestrator.errors import ConfigError

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        data, recipe, overrides = load(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from orchestrator.sweep import run_sweep

    return run_sweep(data, recipe, overrides)


if __name__ == "__main__":
    sys.exit(main())
