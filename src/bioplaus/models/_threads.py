"""One BLAS thread inside the models' computations, whatever the caller set, without paying for it at every call.

Why: a product computed by two BLAS threads may round differently from the
same product computed by one (float32 class scores move by some 1e-7-1e-5),
so a model whose calls ran at the caller's thread count gave different
numbers under ``snakemake --cores 16`` and ``--cores 2``. The estimators'
public calls (``fit``, ``partial_fit``, ``predict``, ``predict_proba``, and what
reads their weights) therefore run with every BLAS library held to one
thread (:func:`holds_one_blas_thread`), and the study's folds parallelise by
processes, not by BLAS threads (:func:`bioplaus.study.evaluation.run_fold`).

Cost: ``threadpoolctl.threadpool_limits`` inspects the loaded libraries each
time it is entered (about 2 ms here), which a ``partial_fit`` or ``predict``
on a few rows would pay per call. The controller of the BLAS libraries is
kept between calls and its ``limit`` (about 0.01 ms) is what the estimators
enter; when every BLAS library already runs one thread (a caller inside
``threadpool_limits(1)``, as the study's folds are) nothing is entered at all
(about 0.001 ms: one ``get_num_threads`` per library).

The controller is rebuilt when the set of loaded Python modules changed
(``len(sys.modules)``, checked at each call): a BLAS library loaded after it
was built, as SciPy's own OpenBLAS (which numba's ``np.dot`` and
``scipy.linalg.blas`` use, separate from NumPy's) is when ``scipy.linalg`` is
imported late, would otherwise never be limited. This is a cache of what the
process has loaded, not a setting.
"""

from __future__ import annotations

import contextlib
import functools
import sys

from threadpoolctl import ThreadpoolController

__all__ = ["one_blas_thread", "holds_one_blas_thread"]

_NOTHING = contextlib.nullcontext()
#: ``[controller of the BLAS libraries, len(sys.modules) when it was built, their get_num_threads]``
_CACHE: list = [None, -1, ()]


def _blas_getters():
    """``(controller, (get_num_threads of each BLAS library))``, rebuilt when modules were loaded."""
    if len(sys.modules) != _CACHE[1]:
        n = len(sys.modules)
        controller = ThreadpoolController().select(user_api="blas")
        _CACHE[:] = [controller, n, tuple(lib.get_num_threads for lib in controller.lib_controllers)]
    return _CACHE[0], _CACHE[2]


def _controller() -> ThreadpoolController:
    return _blas_getters()[0]


def one_blas_thread():
    """A context manager limiting BLAS to one thread (as ``threadpool_limits(1, user_api="blas")``),
    entered at once (use it in a ``with`` statement)."""
    controller, getters = _blas_getters()
    for get in getters:
        if get() != 1:
            return controller.limit(limits=1)
    return _NOTHING


def holds_one_blas_thread(method):
    """Decorator: ``method`` runs with every BLAS library held to one thread (see the module docstring)."""

    @functools.wraps(method)
    def held(*args, **kwargs):
        controller, getters = _blas_getters()
        for get in getters:
            if get() != 1:
                with controller.limit(limits=1):
                    return method(*args, **kwargs)
        return method(*args, **kwargs)

    return held
