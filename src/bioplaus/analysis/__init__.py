"""The analysis layer: from the pipeline's trial tables to statistics and figures.

The package owns everything done after the studies have run: reading
``trials.csv``/``repeats.csv`` (:mod:`~bioplaus.analysis.loading`), the
robustness metrics, the summary table, the "learns" curves, the metrics per
training epoch and the model comparison (:mod:`~bioplaus.analysis.statistics`), which parameters each trial
left inactive (:mod:`~bioplaus.analysis.active`), hyperparameter importance
with bootstrap intervals and interactions (:mod:`~bioplaus.analysis.importance`,
on the random-forest surrogate of :mod:`~bioplaus.analysis.surrogate`),
tunability (:mod:`~bioplaus.analysis.tunability`), the expected best accuracy
after k trials (:mod:`~bioplaus.analysis.trials_needed`), IQM and probability
of improvement (:mod:`~bioplaus.analysis.aggregates`), the transfer regret
table (:mod:`~bioplaus.analysis.transfer`), the figures
(:mod:`~bioplaus.analysis.figures`, imported on demand: ``from bioplaus.analysis
import figures``, so that tables need no matplotlib) and the reader of the
2019 study's logs (:mod:`~bioplaus.analysis.reference`). It knows nothing of
optuna storages, Snakemake or the command line; it uses the model registry
(:mod:`bioplaus.models`) and the dataset registry only for labels::

    from bioplaus.analysis import compare, importance, learns_curve, load_trials, summarize
"""

from bioplaus.analysis.active import REGISTRY, active_matrix, n_active
from bioplaus.analysis.aggregates import improvement_table, iqm, iqm_table, probability_of_improvement
from bioplaus.analysis.importance import MIN_IMPORTANCE_TRIALS, importance, interactions
from bioplaus.analysis.loading import BASE_COLUMNS, FLAG_COLUMNS, load_trials
from bioplaus.analysis.reference import ReferenceLogError, load_reference_logs, read_reference_log
from bioplaus.analysis.statistics import (
    AT_CHANCE_MARGIN,
    GROUP_COLUMNS,
    LEARNS_MARGIN,
    NEAR_BEST_MARGIN,
    THRESHOLD_TOLERANCE,
    at_chance,
    censored_mask,
    compare,
    comparison_pairs,
    is_backprop,
    learning_table,
    learns,
    learns_curve,
    near_best,
    noise_table,
    summarize,
    valid_mask,
    wilson_interval,
)
from bioplaus.analysis.transfer import transfer_table
from bioplaus.analysis.trials_needed import expected_max, expected_max_curves, trials_to_reach
from bioplaus.analysis.tunability import tunability, tunability_shares, tuning_risk

__all__ = [
    "REGISTRY",
    "active_matrix",
    "comparison_pairs",
    "expected_max",
    "expected_max_curves",
    "improvement_table",
    "interactions",
    "iqm",
    "iqm_table",
    "is_backprop",
    "n_active",
    "probability_of_improvement",
    "transfer_table",
    "trials_to_reach",
    "tunability",
    "tunability_shares",
    "tuning_risk",
    "AT_CHANCE_MARGIN",
    "BASE_COLUMNS",
    "FLAG_COLUMNS",
    "GROUP_COLUMNS",
    "LEARNS_MARGIN",
    "MIN_IMPORTANCE_TRIALS",
    "NEAR_BEST_MARGIN",
    "THRESHOLD_TOLERANCE",
    "ReferenceLogError",
    "at_chance",
    "censored_mask",
    "compare",
    "importance",
    "learning_table",
    "learns",
    "learns_curve",
    "load_reference_logs",
    "load_trials",
    "near_best",
    "noise_table",
    "read_reference_log",
    "summarize",
    "valid_mask",
    "wilson_interval",
]
