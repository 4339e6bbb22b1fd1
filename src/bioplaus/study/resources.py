"""The memory a study job declares to its scheduler (Snakemake's ``mem_mb``), defined once.

A study job (the workflow's ``study``, ``study_worker`` and ``alignment``
rules) is one parent process (optuna, the sampler, the memory-mapped
dataset) that evaluates each configuration on ``min(threads, n_folds)``
fold processes at once (:func:`bioplaus.study.evaluation.evaluate`). Its
declared memory is therefore a fixed part for the parent, a part per fold
process and a multiple of the prepared dataset (the memory map's pages,
counted by every process that reads them, and the rows each fold copies).
A fold process needs its baseline (interpreter, libraries, chunk and test
copies of rows) plus the model's own arrays; a model whose arrays can
outgrow the generic allowance at some point of its space declares their
peak (:attr:`bioplaus.models.registry.ModelSpec.memory_mb`, e.g. the CNN's
activations at batch 500 and 64 channels), and the job declares it on top of
the baseline. The workflow (``workflow/rules/common.smk``) calls
:func:`study_mem_mb`; ``benchmarks/space_memory.py`` measures the largest
point of every model's space against it.
"""

from __future__ import annotations

#: MB declared for the parent process of a study job
PARENT_MB = 600
#: MB declared per fold process running at the same time (at least)
PER_FOLD_PROCESS_MB = 300
#: MB of a fold process besides the model's arrays and the memory map: interpreter and libraries
#: (anonymous and file pages), chunk and test copies of rows (measured: 236 MB with the default MLP,
#: benchmarks/space_memory.py)
PROCESS_BASE_MB = 250
#: the prepared dataset counted this many times (MB per MB of ``X.npy``)
DATA_COPIES = 4


def fold_processes(threads: int, n_folds: int) -> int:
    """Fold processes a study job with ``threads`` threads runs at once (as ``evaluate`` does)."""
    return max(1, min(int(threads), int(n_folds)))


def fold_process_mb(model_mb: float = 0.0) -> float:
    """MB declared per fold process: ``max(PER_FOLD_PROCESS_MB, PROCESS_BASE_MB + model_mb)``."""
    return max(float(PER_FOLD_PROCESS_MB), PROCESS_BASE_MB + float(model_mb))


def study_mem_mb(threads: int, n_folds: int, data_nbytes: int | float, model_mb: float = 0.0) -> int:
    """Declared MB of a study job: ``PARENT_MB + fold_process_mb(model_mb) * processes + DATA_COPIES * data MB``.

    ``data_nbytes`` is the size of the prepared float32 array (``X.npy``) in
    bytes (:meth:`bioplaus.data.DatasetInfo.prepared_nbytes`); ``model_mb``
    the model's declared peak (:meth:`bioplaus.models.registry.ModelSpec.peak_memory_mb`).
    """
    return int(PARENT_MB + fold_process_mb(model_mb) * fold_processes(threads, n_folds)
               + DATA_COPIES * float(data_nbytes) / 1e6)
