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
        repeats=lambda w, input: _repeats_arg(input.repeats),
        ref=REF_ARG,
    log:
        f"{LOGS}/summary.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus summarize --trials {input.trials} {params.repeats} {params.ref} --out {output} > {log} 2>&1"


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
        repeats=lambda w, input: _repeats_arg(input.repeats),
        ref=REF_ARG,
        stem=lambda w, output: output.png[: -len(".png")],
    log:
        f"{LOGS}/figures/robustness_{{sampler}}.log",
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus figure robustness --trials {input.trials} {params.repeats} {params.ref} "
        "--sampler {wildcards.sampler} --out {params.stem} > {log} 2>&1"


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
        "(cp {input.png} {output.png} && cp {input.pdf} {output.pdf}) > {log} 2>&1"


rule figure_learns:
    """Answer at a glance: fraction of random configurations reaching accuracy a, per model."""
    input:
        study_outputs(),
    output:
        png=report(f"{RESULTS}/figures/learns_curves.png", caption="../report/learns_curves.rst",
                   category="Robustness", labels={"figure": "learns curves"}),
        pdf=f"{RESULTS}/figures/learns_curves.pdf",
    params:
        stem=lambda w, output: output.png[: -len(".png")],
    log:
        f"{LOGS}/figures/learns_curves.log",
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus figure learns --trials {input} --out {params.stem} > {log} 2>&1"


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
        options=lambda w: model_options(w.model),
        seed=config.get("seed", 1),
        stem=lambda w, output: output.png[: -len(".png")],
    log:
        f"{LOGS}/importance/{{dataset}}_{{model}}.log",
    threads: 1
    resources:
        mem_mb=1500,
        runtime=20,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus importance --trials {input} --model {wildcards.model} --options '{params.options}' "
        "--seed {params.seed} --out-csv {output.csv} --out-figure {params.stem} > {log} 2>&1"


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
        options=lambda w: model_options(w.model),
        stem=lambda w, output: output.png[: -len(".png")],
    log:
        f"{LOGS}/sensitivity/{{dataset}}_{{model}}.log",
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus sensitivity --trials {input} --model {wildcards.model} --options '{params.options}' "
        "--out {params.stem} > {log} 2>&1"


rule comparison:
    """Per dataset: segregated-dendrite vs each backprop model (random-sampler trials)."""
    input:
        expand(f"{RESULTS}/{{dataset}}/{{model}}/random/trials.csv", dataset=DATASETS, model=MODELS),
    output:
        report(f"{RESULTS}/comparison.csv", caption="../report/comparison.rst", category="Tables",
               labels={"table": "comparison"}),
    params:
        seed=config.get("seed", 1),
    log:
        f"{LOGS}/comparison.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus compare --trials {input} --sampler random --seed {params.seed} --out {output} > {log} 2>&1"
