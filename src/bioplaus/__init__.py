"""bioplaus: how robust is a biologically plausible learning rule to its hyperparameters?

The package has three layers that do not know of each other's internals:

* ``bioplaus.models``: the estimators (scikit-learn API) and the model registry;
  the simulator cores know nothing of optuna, Snakemake or files.
* ``bioplaus.data``: the dataset registry, canonical-file parsers, downloads, loading
  and the memory-mapped prepared arrays; it knows nothing of models.
* ``bioplaus.study`` (evaluation, samplers, storage, workers) / ``bioplaus.analysis``: the pipeline
  (cross-validation, optimisation, tables, figures); it knows nothing of neurons.
"""

__version__ = "0.1.0"
