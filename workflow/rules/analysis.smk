# From trials to answers: tables, robustness figures, importance, sensitivity,
# comparison. Importance and sensitivity use only the random-sampler trials
# (the unbiased sample of the search space).


rule summary:
    """Per (dataset, model, sampler): distribution of accuracies and robustness metrics."""
    input:
        trials=study_outputs(),
        repeats=REPEAT_FILES,
    output:
        report(f"{RESULTS}/summary.csv", caption="../report/summary.rst", category="Tables",
               labels={"table": "summary"}),
    params:
        argv=lambda w, input, output: argv("summarize", plugin_args(), "--trials", input.trials, table_args(input), "--out", output[0]),
    log:
        f"{LOGS}/summary.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule figure_robustness:
    """The 2019 review's figure: accuracy per trial, histograms, box plots; one column per dataset."""
    input:
        trials=study_outputs(),
        repeats=REPEAT_FILES,
    output:
        png=report(f"{RESULTS}/figures/robustness_{{sampler}}.png", caption="../report/robustness.rst",
                   category="Robustness", labels={"figure": "robustness", "sampler": "{sampler}"}),
        pdf=f"{RESULTS}/figures/robustness_{{sampler}}.pdf",
    params:
        argv=lambda w, input, output: argv(
            "figure", "robustness", plugin_args(), "--trials", input.trials, table_args(input), "--sampler", w.sampler,
            "--out", output.png[: -len(".png")]),
    log:
        f"{LOGS}/figures/robustness_{{sampler}}.log",
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule figure_robustness_main:
    """robustness.png: the figure of the 2019 review's sampler (gp) or the first configured one."""
    input:
        png=f"{RESULTS}/figures/robustness_{'gp' if 'gp' in SAMPLERS else SAMPLERS[0]}.png",
        pdf=f"{RESULTS}/figures/robustness_{'gp' if 'gp' in SAMPLERS else SAMPLERS[0]}.pdf",
    output:
        png=report(f"{RESULTS}/figures/robustness.png", caption="../report/robustness.rst",
                   category="Robustness", labels={"figure": "robustness", "sampler": "main"}),
        pdf=f"{RESULTS}/figures/robustness.pdf",
    log:
        f"{LOGS}/figures/robustness.log",
    localrule: True
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "(cp {input.png:q} {output.png:q} && cp {input.pdf:q} {output.pdf:q}) > {log:q} 2>&1"


rule figure_learns:
    """Answer at a glance: fraction of random configurations reaching accuracy a, per model."""
    input:
        study_outputs(),
    output:
        png=report(f"{RESULTS}/figures/learns_curves.png", caption="../report/learns_curves.rst",
                   category="Robustness", labels={"figure": "learns curves"}),
        pdf=f"{RESULTS}/figures/learns_curves.pdf",
    params:
        argv=lambda w, input, output: argv("figure", "learns", plugin_args(), "--trials", list(input), "--out", output.png[: -len(".png")]),
    log:
        f"{LOGS}/figures/learns_curves.log",
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule learning:
    """Per (dataset, model, sampler) and epoch: the robustness metrics after each training epoch."""
    input:
        study_outputs(),
    output:
        report(f"{RESULTS}/learning.csv", caption="../report/learning.rst", category="Tables",
               labels={"table": "learning"}),
    params:
        argv=lambda w, input, output: argv("learning", plugin_args(), "--trials", list(input), "--out", output[0]),
    log:
        f"{LOGS}/learning.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule figure_learns_by_epoch:
    """Would more training help? Fraction of random configurations that learn after each epoch, per model."""
    input:
        study_outputs(),
    output:
        png=report(f"{RESULTS}/figures/learns_by_epoch.png", caption="../report/learns_by_epoch.rst",
                   category="Robustness", labels={"figure": "learns by epoch"}),
        pdf=f"{RESULTS}/figures/learns_by_epoch.pdf",
    params:
        argv=lambda w, input, output: argv(
            "figure", "learns-by-epoch", plugin_args(), "--trials", list(input), "--sampler", "random",
            "--out", output.png[: -len(".png")]),
    log:
        f"{LOGS}/figures/learns_by_epoch.log",
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule importance:
    """fANOVA and PED-ANOVA importances over the random-sampler trials of one (dataset, model)."""
    input:
        f"{RESULTS}/{{dataset}}/{{model}}/random/trials.csv",
    output:
        csv=report(f"{RESULTS}/{{dataset}}/{{model}}/importance.csv", caption="../report/importance_table.rst",
                   category="Importance", subcategory="{dataset}",
                   labels={"dataset": "{dataset}", "model": "{model}", "table": "importance"}),
        png=report(f"{RESULTS}/figures/importance_{{dataset}}_{{model}}.png", caption="../report/importance.rst",
                   category="Importance", subcategory="{dataset}",
                   labels={"dataset": "{dataset}", "model": "{model}", "figure": "importance"}),
        pdf=f"{RESULTS}/figures/importance_{{dataset}}_{{model}}.pdf",
    params:
        argv=lambda w, input, output: argv(
            "importance", plugin_args(), "--trials", input[0], "--model", w.model, "--options", model_options(w.model),
            "--seed", config["seed"], "--out-csv", output.csv, "--out-figure", output.png[: -len(".png")]),
    log:
        f"{LOGS}/importance/{{dataset}}_{{model}}.log",
    threads: 1
    resources:
        mem_mb=1500,
        runtime=20,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule sensitivity:
    """Accuracy against each hyperparameter over the random-sampler trials."""
    input:
        f"{RESULTS}/{{dataset}}/{{model}}/random/trials.csv",
    output:
        png=report(f"{RESULTS}/figures/sensitivity_{{dataset}}_{{model}}.png", caption="../report/sensitivity.rst",
                   category="Sensitivity", subcategory="{dataset}",
                   labels={"dataset": "{dataset}", "model": "{model}", "figure": "sensitivity"}),
        pdf=f"{RESULTS}/figures/sensitivity_{{dataset}}_{{model}}.pdf",
    params:
        argv=lambda w, input, output: argv(
            "sensitivity", plugin_args(), "--trials", input[0], "--model", w.model, "--options",
            model_options(w.model), "--out", output.png[: -len(".png")]),
    log:
        f"{LOGS}/sensitivity/{{dataset}}_{{model}}.log",
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule comparison:
    """Per dataset: each biologically plausible rule vs each backprop model (random-sampler trials)."""
    input:
        expand(f"{RESULTS}/{{dataset}}/{{model}}/random/trials.csv", dataset=DATASETS, model=MODELS),
    output:
        report(f"{RESULTS}/comparison.csv", caption="../report/comparison.rst", category="Tables",
               labels={"table": "comparison"}),
    params:
        argv=lambda w, input, output: argv(
            "compare", plugin_args(), "--trials", list(input), "--sampler", "random", "--seed", config["seed"],
            "--out", output[0]),
    log:
        f"{LOGS}/comparison.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"
