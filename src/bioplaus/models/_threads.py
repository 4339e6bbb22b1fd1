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
kept between calls, and a call sets each library that runs more than one
thread to one and back (a few microseconds: one ``get_num_threads`` and two
``set_num_threads`` per library); when every BLAS library already runs one
thread (a caller inside ``threadpool_limits(1)``, as the study's folds are)
nothing is set at all (about 0.001 ms: one ``get_num_threads`` per library).

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

#: ``[len(sys.modules) when the cache was built, ((get_num_threads, set_num_threads) of each BLAS library)]``
_CACHE: list = [-1, ()]


def _blas_libraries():
    """``(get_num_threads, set_num_threads)`` of each loaded BLAS library, rebuilt when modules were loaded."""
    if len(sys.modules) != _CACHE[0]:
        n = len(sys.modules)
        controller = ThreadpoolController().select(user_api="blas")
        _CACHE[:] = [n, tuple((lib.get_num_threads, lib.set_num_threads) for lib in controller.lib_controllers)]
    return _CACHE[1]


def _hold():
    """Set every BLAS library to one thread; the ``(set_num_threads, threads)`` to restore."""
    changed = []
    for get, set_ in _blas_libraries():
        n = get()
        if n != 1:
            set_(1)
            changed.append((set_, n))
    return changed


def _release(changed):
    for set_, n in reversed(changed):
        set_(n)


@contextlib.contextmanager
def one_blas_thread():
    """A context manager limiting BLAS to one thread (as ``threadpool_limits(1, user_api="blas")``)
    and restoring the threads it found on exit."""
    changed = _hold()
    try:
        yield
    finally:
        _release(changed)


def holds_one_blas_thread(method):
    """Decorator: ``method`` runs with every BLAS library held to one thread (see the module docstring)."""

    @functools.wraps(method)
    def held(*args, **kwargs):
        changed = _hold()
        if not changed:
            return method(*args, **kwargs)
        try:
            return method(*args, **kwargs)
        finally:
            _release(changed)

    return held
