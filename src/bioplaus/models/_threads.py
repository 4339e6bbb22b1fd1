"""One BLAS thread inside a model's small products, without paying for it at every call.

``threadpoolctl.threadpool_limits`` inspects the loaded libraries each time it
is entered (about 2 ms here), which a ``partial_fit`` or ``predict`` on a few
rows would pay per call. The controller is built once per process, on first
use, and its ``limit`` (about 0.01 ms) is what the estimators enter. This is a
cache of what the process has loaded, not a setting.
"""

from __future__ import annotations

from functools import lru_cache

from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    return ThreadpoolController()


def one_blas_thread():
    """A context manager limiting BLAS to one thread (as ``threadpool_limits(1, user_api="blas")``)."""
    return _controller().limit(limits=1, user_api="blas")
