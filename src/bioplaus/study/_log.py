"""The study's progress log: one time-stamped line per event on stderr."""

from __future__ import annotations

import sys
import time


def log(msg: str) -> None:
    """Print ``msg`` on stderr after the wall-clock time (``HH:MM:SS``), flushed at once."""
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)
