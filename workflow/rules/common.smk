# Shared helpers: target lists, resources, and the command lines of the rules.
#
# The config was validated (and its defaults filled in) by bioplaus.config in
# the Snakefile, so every key is read here without a default of its own.
# No config value is pasted into a shell command as text: every command line
# is built as a list of arguments and quoted once, by `argv` (shlex), and a
# storage password never enters a command line (see STORAGE below).
import json
import re
import shlex

from bioplaus.config import storage_without_password
from bioplaus.data import dataset_info
from bioplaus.study import resources

DATASETS = list(config["datasets"])
MODELS = list(config["models"])
SAMPLERS = list(config["samplers"])
RESULTS = "results"
DATA_DIR = config["data_dir"]
WORKERS = int(config["workers"])
REPEATS = int(config["repeats"])
PLUGINS = list(config["plugins"])
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
# The storage URL as it appears in commands, logs and the report: without its
# password. The password (if the config held one) reaches the jobs through the
# environment variable the CLI reads (BIOPLAUS_STORAGE_PASSWORD); libpq's
# PGPASSFILE / ~/.pgpass work as usual for PostgreSQL.
STORAGE, _STORAGE_PASSWORD = storage_without_password(config["storage"])
if _STORAGE_PASSWORD is not None:
    os.environ["BIOPLAUS_STORAGE_PASSWORD"] = _STORAGE_PASSWORD
    config["storage"] = STORAGE  # nor in the config Snakemake records
del _STORAGE_PASSWORD
REFERENCE = config["reference_logs"] or None


wildcard_constraints:
    dataset="|".join(re.escape(d) for d in DATASETS),
    model="|".join(re.escape(m) for m in MODELS),
    sampler="|".join(re.escape(s) for s in SAMPLERS),
    worker=r"\d+",


def argv(*parts):
    """One shell-safe string of command-line arguments (each part quoted; lists expanded)."""
    flat = []
    for part in parts:
        if isinstance(part, (list, tuple)):
            flat.extend(str(p) for p in part)
        elif part is not None:
            flat.append(str(part))
    return shlex.join(flat)


def dataset_opts(dataset):
    return config["datasets"].get(dataset) or {}


def model_options(model):
    return json.dumps((config["model_options"] or {}).get(model) or {}, sort_keys=True)


def plugin_args():
    return [a for p in PLUGINS for a in ("--plugin", p)]


def study_threads():
    return int(config["threads"])


def study_mem_mb(wildcards, threads):
    """The config's mem_mb of the dataset, else bioplaus.study.resources.study_mem_mb (parent, fold processes
    with the model's declared peak, data)."""
    from bioplaus.models import get_model

    declared = (config.get("mem_mb") or {}).get(wildcards.dataset)  # optional key: no default
    if declared:
        return int(declared)
    info = dataset_info(wildcards.dataset)
    nbytes = info.prepared_nbytes(dataset_opts(wildcards.dataset).get("max_samples"))
    options = (config["model_options"] or {}).get(wildcards.model)
    model_mb = get_model(wildcards.model).peak_memory_mb(options, info.shape)
    return resources.study_mem_mb(threads, config["n_folds"], nbytes, model_mb)


def prepare_mem_mb(wildcards):
    """Loading pools the raw files and the float32 array of the whole dataset, MB."""
    return int(500 + 3 * dataset_info(wildcards.dataset).prepared_nbytes() / 1e6)


def study_args(wildcards):
    """Arguments shared by the study, export and repeats commands (a list)."""
    args = [
        "--data", f"{RESULTS}/data/{wildcards.dataset}",
        "--dataset", wildcards.dataset,
        "--model", wildcards.model,
        "--folds", config["n_folds"],
        "--epochs", config["epochs"],
        "--seed", config["seed"],
        "--options", model_options(wildcards.model),
    ]
    if config["time_limit"]:
        args += ["--time-limit", config["time_limit"]]
    return plugin_args() + args


def optimiser_args(wildcards):
    args = [
        "--sampler", wildcards.sampler,
        "--n-trials", config["n_trials"],
        "--n-initial-points", config["n_initial_points"],
        "--kappa", config["kappa"],
        "--max-retries", config["max_retries"],
        "--max-consecutive-invalid", config["max_consecutive_invalid"],
    ]
    if STORAGE:
        args += ["--storage", STORAGE]
    return args


def study_outputs():
    return expand(
        f"{RESULTS}/{{dataset}}/{{model}}/{{sampler}}/trials.csv",
        dataset=DATASETS, model=MODELS, sampler=SAMPLERS,
    )


def compared_models():
    """Models compared with the backprop baselines in comparison.csv: every model that is not one."""
    from bioplaus.models import get_model

    return [m for m in MODELS if not get_model(m).backprop]


def all_targets():
    targets = study_outputs() + [
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/learning.csv",
        f"{RESULTS}/figures/robustness.png",
    ] + expand(f"{RESULTS}/figures/robustness_{{sampler}}.png", sampler=SAMPLERS)
    if "random" in SAMPLERS:
        targets += [f"{RESULTS}/figures/learns_curves.png", f"{RESULTS}/figures/learns_by_epoch.png"]
        targets += expand(f"{RESULTS}/{{dataset}}/{{model}}/importance.csv", dataset=DATASETS, model=MODELS)
        targets += expand(f"{RESULTS}/figures/sensitivity_{{dataset}}_{{model}}.png", dataset=DATASETS, model=MODELS)
        if 0 < len(compared_models()) < len(MODELS):
            targets.append(f"{RESULTS}/comparison.csv")
    if REPEATS > 0:
        targets += expand(f"{RESULTS}/{{dataset}}/{{model}}/repeats.csv", dataset=DATASETS, model=MODELS)
    targets += alignment_targets()  # workflow/rules/alignment.smk
    return targets


def raw_inputs(wildcards):
    from bioplaus.data import locate_files

    if dataset_info(wildcards.dataset).embedded:
        return []
    found = locate_files(wildcards.dataset, DATA_DIR)
    if found:
        return sorted(str(p) for p in found.values())
    return [f"{DATA_DIR}/{wildcards.dataset}/.verified"]


REPEAT_FILES = (
    expand(f"{RESULTS}/{{dataset}}/{{model}}/repeats.csv", dataset=DATASETS, model=MODELS)
    if REPEATS > 0
    else []
)


def table_args(input):
    """``--repeats FILES`` and ``--reference DIR`` of the summary and figure commands."""
    args = []
    if input.repeats:
        args += ["--repeats", *input.repeats]
    if REFERENCE:
        args += ["--reference", REFERENCE]
    return args
