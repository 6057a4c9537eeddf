"""Tracking that cannot stop a sweep: the first failed MLflow call marks the store down, computing goes on.

A team server may go away mid-sweep (a restart, a network cut). Every finished node is in the cache
already, so nothing is lost: the sweep finishes its computation, stops calling the store (no minutes of
retries per node), and ends saying how many runs could not be logged and that rerunning the same command
logs them from the cache.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class Logbook:
    """Wraps a Tracker (or None: tracking off); `call` runs one tracking step unless the store is down."""

    def __init__(self, tracker: Any, uri: str = "") -> None:
        self.tracker, self.uri = tracker, uri
        self.error: BaseException | None = None
        self.logged, self.unlogged = 0, 0

    @property
    def down(self) -> bool:
        """True once a tracking call failed (every later call is skipped)."""
        return self.error is not None

    def call(self, what: str, fn: Callable[..., Any], *args: Any, counts: bool = False) -> Any:
        """Run `fn(*args)`; on its first failure warn once, remember the error and skip from then on."""
        if self.tracker is None:
            return None
        if self.down:
            self.unlogged += counts
            return None
        try:
            out = fn(*args)
        except Exception as err:  # any store failure: connection lost, HTTP 5xx, a locked database
            self.error = err
            self.unlogged += counts
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"warning: MLflow stopped answering at tracking.uri={self.uri} while logging {what} ({first}); "
                  "the sweep goes on, its results stay in the cache", file=sys.stderr, flush=True)
            return None
        self.logged += counts
        return out

    def summary(self) -> str | None:
        """What could not be logged and how to fix it, or None when everything was logged."""
        if not self.down:
            return None
        return (f"error: {self.unlogged} node run(s) and the sweep's report could not be logged to "
                f"tracking.uri={self.uri} ({self.logged} were). Every finished node is in the cache: once the "
                "server answers again, rerun the same command and it logs them all from the cache without "
                "recomputing.")
