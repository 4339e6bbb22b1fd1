"""The memory a study job declares to its scheduler (Snakemake's ``mem_mb``), defined once.

A study job (the workflow's ``study``, ``study_worker`` and ``alignment``
rules) is one parent process (optuna, the sampler, the memory-mapped
dataset) that evaluates each configuration on ``min(threads, n_folds)``
fold processes at once (:func:`bioplaus.study.evaluation.evaluate`). Its
declared memory is therefore a fixed part for the parent, a part per fold
process (interpreter, libraries, model state, chunk copies) and a multiple
of the prepared dataset (the memory map's pages, counted by every process
that reads them, and the rows each fold copies). The workflow
(``workflow/rules/common.smk``) calls :func:`study_mem_mb`;
``benchmarks/space_memory.py`` measures the largest point of every model's
space against it.
"""

from __future__ import annotations

#: MB declared for the parent process of a study job
PARENT_MB = 600
#: MB declared per fold process running at the same time
PER_FOLD_PROCESS_MB = 300
#: the prepared dataset counted this many times (MB per MB of ``X.npy``)
DATA_COPIES = 4


def fold_processes(threads: int, n_folds: int) -> int:
    """Fold processes a study job with ``threads`` threads runs at once (as ``evaluate`` does)."""
    return max(1, min(int(threads), int(n_folds)))


def study_mem_mb(threads: int, n_folds: int, data_nbytes: int | float) -> int:
    """Declared MB of a study job: ``PARENT_MB + PER_FOLD_PROCESS_MB * processes + DATA_COPIES * data MB``.

    ``data_nbytes`` is the size of the prepared float32 array (``X.npy``) in
    bytes (:meth:`bioplaus.data.DatasetInfo.prepared_nbytes`).
    """
    return int(PARENT_MB + PER_FOLD_PROCESS_MB * fold_processes(threads, n_folds)
               + DATA_COPIES * float(data_nbytes) / 1e6)
