# What a reviewer of a robustness claim asks beyond the distributions:
# tunability (Probst et al. 2019), trials needed (Dodge et al. 2019 / Tang et
# al. 2020), importance with bootstrap intervals and interactions, IQM and
# probability of improvement (Agarwal et al. 2021), transfer across datasets.
# Every definition lives in bioplaus.analysis (see the README's metrics section).
#
# Extra evaluations: `transfer` refits each other dataset's best configuration
# on a dataset (resumable: finished refits are kept in
# <out>.partial.csv, which Snakemake never deletes). The default's refits come
# from the `repeats` rule (repeats.csv, source "default"). With one dataset
# there is nothing to transfer and no transfer target is requested.
from bioplaus.analysis.aggregates import AGGREGATE_BOOTSTRAP
from bioplaus.analysis.importance import IMPORTANCE_BOOTSTRAP
from bioplaus.analysis.trials_needed import CURVE_BOOTSTRAP

#: refits of each transferred configuration (as the noise floor's; at least one)
TRANSFER_REPEATS = max(1, REPEATS)
#: bootstrap resamples of the pairwise interactions (each refits the forest)
INTERACTION_BOOTSTRAP = 20


def random_trials():
    return expand(f"{RESULTS}/{{dataset}}/{{model}}/random/trials.csv", dataset=DATASETS, model=MODELS)


def transfer_sources(wildcards):
    """(dataset, sampler, best.json) of every sampler of every other dataset, for this model."""
    return [(d, s, f"{RESULTS}/{d}/{wildcards.model}/{s}/best.json")
            for d in DATASETS if d != wildcards.dataset for s in SAMPLERS]


def robustness_targets():
    targets = [f"{RESULTS}/tunability.csv", f"{RESULTS}/tunability_params.csv"]
    if "random" in SAMPLERS:
        targets += [f"{RESULTS}/trials_needed.csv", f"{RESULTS}/iqm.csv", f"{RESULTS}/improvement.csv"]
        targets += expand(f"{RESULTS}/figures/expected_max_{{dataset}}.png", dataset=DATASETS)
        targets += expand(f"{RESULTS}/{{dataset}}/{{model}}/importance_ci.csv", dataset=DATASETS, model=MODELS)
    if len(DATASETS) > 1:
        targets.append(f"{RESULTS}/transfer.csv")
    return targets


rule robustness:
    """Every robustness table and figure (tunability, trials needed, importance intervals, aggregates, transfer)."""
    input:
        robustness_targets(),


rule tunability:
    """Per dataset and model: default vs best (d), tuning risk; per hyperparameter: share of d."""
    input:
        trials=study_outputs(),
        repeats=REPEAT_FILES,
    output:
        table=report(f"{RESULTS}/tunability.csv", caption="../report/tunability.rst", category="Robustness answers",
                     labels={"table": "tunability"}),
        params=report(f"{RESULTS}/tunability_params.csv", caption="../report/tunability_params.rst",
                      category="Robustness answers", labels={"table": "tunability per hyperparameter"}),
    params:
        argv=lambda w, input, output: argv(
            "tunability", plugin_args(), "--trials", input.trials,
            ["--repeats", *input.repeats] if input.repeats else [],
            "--model-options", json.dumps(config["model_options"] or {}, sort_keys=True),
            "--seed", config["seed"], "--out", output.table, "--out-params", output.params),
    log:
        f"{LOGS}/tunability.log",
    threads: 1
    resources:
        mem_mb=1500,
        runtime=20,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule trials_needed:
    """Expected best accuracy after k random trials, per dataset and model, with a bootstrap band."""
    input:
        trials=random_trials(),
        repeats=REPEAT_FILES,
    output:
        table=report(f"{RESULTS}/trials_needed.csv", caption="../report/trials_needed.rst",
                     category="Robustness answers", labels={"table": "trials needed"}),
        png=[report(f"{RESULTS}/figures/expected_max_{d}.png", caption="../report/expected_max.rst",
                    category="Robustness answers", subcategory=d, labels={"dataset": d, "figure": "trials needed"})
             for d in DATASETS],
        pdf=[f"{RESULTS}/figures/expected_max_{d}.pdf" for d in DATASETS],
    params:
        argv=lambda w, input, output: argv(
            "trials-needed", plugin_args(), "--trials", input.trials,
            ["--repeats", *input.repeats] if input.repeats else [],
            "--n-boot", CURVE_BOOTSTRAP, "--seed", config["seed"], "--out", output.table,
            "--figures", [p[: -len(".png")] for p in output.png]),
    log:
        f"{LOGS}/trials_needed.log",
    threads: 1
    resources:
        mem_mb=1500,
        runtime=20,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule importance_ci:
    """Conditional importances with bootstrap intervals and the largest interactions (random trials)."""
    input:
        f"{RESULTS}/{{dataset}}/{{model}}/random/trials.csv",
    output:
        csv=report(f"{RESULTS}/{{dataset}}/{{model}}/importance_ci.csv", caption="../report/importance_ci.rst",
                   category="Importance", subcategory="{dataset}",
                   labels={"dataset": "{dataset}", "model": "{model}", "table": "importance with intervals"}),
        interactions=report(f"{RESULTS}/{{dataset}}/{{model}}/interactions.csv",
                            caption="../report/interactions.rst", category="Importance", subcategory="{dataset}",
                            labels={"dataset": "{dataset}", "model": "{model}", "table": "interactions"}),
        png=report(f"{RESULTS}/figures/importance_ci_{{dataset}}_{{model}}.png",
                   caption="../report/importance_ci_figure.rst", category="Importance", subcategory="{dataset}",
                   labels={"dataset": "{dataset}", "model": "{model}", "figure": "importance with intervals"}),
        pdf=f"{RESULTS}/figures/importance_ci_{{dataset}}_{{model}}.pdf",
    params:
        argv=lambda w, input, output: argv(
            "importance", plugin_args(), "--trials", input[0], "--model", w.model, "--options", model_options(w.model),
            "--seed", config["seed"], "--n-boot", IMPORTANCE_BOOTSTRAP, "--out-interactions", output.interactions,
            "--n-boot-interactions", INTERACTION_BOOTSTRAP, "--out-csv", output.csv,
            "--out-figure", output.png[: -len(".png")]),
    log:
        f"{LOGS}/importance_ci/{{dataset}}_{{model}}.log",
    threads: 1
    resources:
        mem_mb=1500,
        runtime=60,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule aggregates:
    """Per model: IQM over random configurations; P(X_a > X_b) per pair; stratified bootstrap CIs."""
    input:
        random_trials(),
    output:
        iqm=report(f"{RESULTS}/iqm.csv", caption="../report/iqm.rst", category="Robustness answers",
                   labels={"table": "IQM"}),
        improvement=report(f"{RESULTS}/improvement.csv", caption="../report/improvement.rst",
                           category="Robustness answers", labels={"table": "probability of improvement"}),
    params:
        argv=lambda w, input, output: argv(
            "aggregates", plugin_args(), "--trials", list(input), "--n-boot", AGGREGATE_BOOTSTRAP,
            "--seed", config["seed"], "--out-iqm", output.iqm, "--out-improvement", output.improvement),
    log:
        f"{LOGS}/aggregates.log",
    threads: 1
    resources:
        mem_mb=1500,
        runtime=20,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule transfer:
    """Refit the best configuration of every other dataset on this one (resumable)."""
    input:
        data=rules.prepare_data.output,
        best=lambda w: [path for _, _, path in transfer_sources(w)],
    output:
        f"{RESULTS}/{{dataset}}/{{model}}/transfer_rows.csv",
    params:
        argv=lambda w, input, output, threads: argv(
            "transfer", study_args(w), "--out", output[0], "--repeats", TRANSFER_REPEATS,
            "--best", [f"{d}:{s}={path}" for d, s, path in transfer_sources(w)], "--threads", threads),
    threads: study_threads()
    resources:
        mem_mb=study_mem_mb,
        runtime=config["runtime"],
    log:
        f"{LOGS}/transfer/{{dataset}}_{{model}}.log",
    benchmark:
        f"{BENCH}/transfer/{{dataset}}_{{model}}.tsv"
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule transfer_table:
    """transfer.csv: each dataset's best configuration on every other dataset, and its regret."""
    input:
        rows=expand(f"{RESULTS}/{{dataset}}/{{model}}/transfer_rows.csv", dataset=DATASETS, model=MODELS),
        trials=study_outputs(),
        repeats=REPEAT_FILES,
    output:
        report(f"{RESULTS}/transfer.csv", caption="../report/transfer.rst", category="Robustness answers",
               labels={"table": "transfer"}),
    params:
        argv=lambda w, input, output: argv(
            "transfer-table", plugin_args(), "--rows", input.rows, "--trials", input.trials,
            ["--repeats", *input.repeats] if input.repeats else [], "--out", output[0]),
    log:
        f"{LOGS}/transfer.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"
