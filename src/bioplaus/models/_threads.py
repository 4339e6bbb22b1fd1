"""One BLAS thread inside a model's small products, without paying for it at every call.

``threadpoolctl.threadpool_limits`` inspects the loaded libraries each time it
is entered (about 2 ms here), which a ``partial_fit`` or ``predict`` on a few
rows would pay per call. The controller of the BLAS libraries is built once
per process, on first use, and its ``limit`` (about 0.01 ms) is what the
estimators enter; when every BLAS library already runs one thread (a caller
inside ``threadpool_limits(1)``, as the study's workers are) nothing is
entered at all (about 0.001 ms: one ``get_num_threads`` per library). This is
a cache of what the process has loaded, not a setting.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _blas() -> ThreadpoolController:
    return ThreadpoolController().select(user_api="blas")


def one_blas_thread():
    """A context manager limiting BLAS to one thread (as ``threadpool_limits(1, user_api="blas")``)."""
    blas = _blas()
    if all(lib.get_num_threads() == 1 for lib in blas.lib_controllers):
        return contextlib.nullcontext()
    return blas.limit(limits=1)
