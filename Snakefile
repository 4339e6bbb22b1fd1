# bioplaus: how robust is a biologically plausible learning rule to its
# hyperparameters? Run with `snakemake --cores 16`; read results/.
#
# Targets (each rebuildable alone):
#   results/<dataset>/<model>/<sampler>/trials.csv   one optimisation study
#   results/<dataset>/<model>/repeats.csv            the noise floor
#   results/<dataset>/<model>/alignment.csv          angle to backprop per epoch (rules that record it)
#   results/<dataset>/<model>/importance.csv         hyperparameter importance
#   results/summary.csv, results/comparison.csv      tables
#   results/figures/*.png|pdf                        figures
#   results/estimate.txt                             predicted cost (`snakemake estimate`, not in `all`)

import os
import sys

from snakemake.utils import min_version

from bioplaus.config import validate_config
from bioplaus.workflow_support import check_stored_studies, clear_stale_locks, read_config, rerun_incomplete_always

min_version("8.0")

# config.yaml is the default study; `--configfile other.yaml` replaces it
# (instead of merging its dataset list into the default one). Both are read
# by bioplaus's loader (YAML 1.2 numbers such as 1e300; a syntax error names
# the file and line), `--config key=value` on top.
config.clear()
config.update(read_config(list(workflow.config_settings.configfiles) or ["config.yaml"],
                          workflow.config_settings.config))

validate_config(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))

# "Run the same command again" after a kill: a job cut short is re-run
# (--rerun-incomplete; its study resumes from its storage), a killed run's
# directory lock is removed when no other Snakemake works here, and a study
# whose stored settings differ from the config stops the run before any of
# its outputs is deleted.
rerun_incomplete_always(workflow)
clear_stale_locks(".", log=lambda msg: print(msg, file=sys.stderr))
check_stored_studies(config, "results")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/study.smk"
include: "workflow/rules/alignment.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/robustness.smk"
include: "workflow/rules/estimate.smk"


rule all:
    input:
        all_targets(),
        robustness_targets(),
    default_target: True
