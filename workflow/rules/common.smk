# Shared helpers: config defaults, target lists, resources.
import json
import re

DATASETS = list(config["datasets"])
MODELS = list(config["models"])
SAMPLERS = list(config["samplers"])
RESULTS = "results"
DATA_DIR = config.get("data_dir", "data")
WORKERS = int(config.get("workers", 1))
REPEATS = int(config.get("repeats", 5))
STORAGE = config.get("storage") or None
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"

# images x bytes per image, to size memory (MB) per job when the config does not say
_DATASET_MB = {"digits": 50, "mnist-5k": 100, "mnist": 900, "fashion": 900, "cifar10": 2600}


wildcard_constraints:
    dataset="|".join(re.escape(d) for d in DATASETS),
    model="|".join(MODELS),
    sampler="|".join(SAMPLERS),
    worker=r"\d+",


def dataset_opts(dataset):
    return config["datasets"].get(dataset) or {}


def model_options(model):
    return json.dumps((config.get("model_options") or {}).get(model) or {}, sort_keys=True)


def study_threads():
    return int(config.get("threads", 3))


def study_mem_mb(wildcards, threads):
    """Data (shared memory map) + per-fold worker copies and model state, MB."""
    declared = (config.get("mem_mb") or {}).get(wildcards.dataset)
    if declared:
        return int(declared)
    base = _DATASET_MB.get(wildcards.dataset, 1000)
    max_samples = dataset_opts(wildcards.dataset).get("max_samples")
    if max_samples:
        base = max(50, int(base * min(1.0, max_samples / 70000) * 10))
    return int(600 + 300 * min(threads, int(config.get("n_folds", 3))) + 1.5 * base)


def study_args(wildcards):
    """Command-line arguments shared by study, export and repeats commands."""
    args = [
        f"--data {RESULTS}/data/{wildcards.dataset}",
        f"--dataset {wildcards.dataset}",
        f"--model {wildcards.model}",
        f"--folds {config.get('n_folds', 3)}",
        f"--epochs {config.get('epochs', 10)}",
        f"--seed {config.get('seed', 1)}",
        f"--options '{model_options(wildcards.model)}'",
    ]
    if config.get("time_limit"):
        args.append(f"--time-limit {config['time_limit']}")
    return " ".join(args)


def optimiser_args(wildcards):
    args = [
        f"--sampler {wildcards.sampler}",
        f"--n-trials {config.get('n_trials', 50)}",
        f"--n-initial-points {config.get('n_initial_points', 5)}",
        f"--kappa {config.get('kappa', 2.5)}",
    ]
    if STORAGE:
        args.append(f"--storage '{STORAGE}'")
    return " ".join(args)


def study_outputs():
    return expand(
        f"{RESULTS}/{{dataset}}/{{model}}/{{sampler}}/trials.csv",
        dataset=DATASETS, model=MODELS, sampler=SAMPLERS,
    )


def all_targets():
    targets = study_outputs() + [
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/figures/robustness.png",
    ] + expand(f"{RESULTS}/figures/robustness_{{sampler}}.png", sampler=SAMPLERS)
    if "random" in SAMPLERS:
        targets += [f"{RESULTS}/figures/learns_curves.png"]
        targets += expand(f"{RESULTS}/{{dataset}}/{{model}}/importance.csv", dataset=DATASETS, model=MODELS)
        targets += expand(f"{RESULTS}/figures/sensitivity_{{dataset}}_{{model}}.png", dataset=DATASETS, model=MODELS)
        if "segdend" in MODELS and len(MODELS) > 1:
            targets.append(f"{RESULTS}/comparison.csv")
    if REPEATS > 0:
        targets += expand(f"{RESULTS}/{{dataset}}/{{model}}/repeats.csv", dataset=DATASETS, model=MODELS)
    return targets


def raw_inputs(wildcards):
    from bioplaus.data import dataset_info, locate_files

    if dataset_info(wildcards.dataset).embedded:
        return []
    found = locate_files(wildcards.dataset, DATA_DIR)
    if found:
        return sorted(str(p) for p in found.values())
    return [f"{DATA_DIR}/{wildcards.dataset}/.verified"]


REFERENCE = config.get("reference_logs") or None
REF_ARG = f"--reference '{REFERENCE}'" if REFERENCE else ""
REPEAT_FILES = (
    expand(f"{RESULTS}/{{dataset}}/{{model}}/repeats.csv", dataset=DATASETS, model=MODELS)
    if REPEATS > 0
    else []
)


def _repeats_arg(files):
    return ("--repeats " + " ".join(files)) if files else ""
