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

import os

from snakemake.utils import min_version

from bioplaus.config import validate_config

min_version("8.0")

# config.yaml is the default study; `--configfile other.yaml` replaces it
# (instead of merging its dataset list into the default one).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"



validate_config(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/study.smk"
include: "workflow/rules/alignment.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/robustness.smk"


rule all:
    input:
        all_targets(),
        robustness_targets(),
    default_target: True
