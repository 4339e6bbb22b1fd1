# Alignment: per epoch, the angle between a rule's hidden-layer updates and
# backprop's gradient, for the published default and each sampler's best
# configuration, with the seeds of the first noise-floor repeat (first fold).
# Only models whose estimator records the angle get the target: their
# ModelSpec.options declare `record_alignment` (the registry decides; adding a
# rule needs no edit here).


def alignment_models():
    """Configured models whose estimator records the angle to backprop's gradient."""
    from bioplaus.study.alignment import supports_alignment

    return [m for m in MODELS if supports_alignment(m)]


ALIGNMENT_MODELS = alignment_models()


def alignment_outputs():
    return expand(f"{RESULTS}/{{dataset}}/{{model}}/alignment.csv", dataset=DATASETS, model=ALIGNMENT_MODELS)


def alignment_targets():
    """alignment.csv of every (dataset, model that records alignment) and the figure, if any."""
    if not ALIGNMENT_MODELS:
        return []
    return alignment_outputs() + [f"{RESULTS}/figures/alignment.png"]


rule alignment:
    """Angle to backprop's gradient and held-out accuracy after each epoch, default and best configurations."""
    input:
        data=rules.prepare_data.output,
        best=expand(f"{RESULTS}/{{{{dataset}}}}/{{{{model}}}}/{{sampler}}/best.json", sampler=SAMPLERS),
    output:
        report(
            f"{RESULTS}/{{dataset}}/{{model}}/alignment.csv",
            caption="../report/alignment.rst",
            category="Alignment",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}", "table": "alignment"},
        ),
    wildcard_constraints:
        # a model without the record has no alignment target (never matches when there is none)
        model="|".join(re.escape(m) for m in ALIGNMENT_MODELS) or "(?!)",
    params:
        argv=lambda w, input, output, threads: argv(
            "alignment", study_args(w), "--out", output[0],
            "--best", [f"{s}={p}" for s, p in zip(SAMPLERS, input.best)], "--threads", threads),
    # one training process at one BLAS thread (bioplaus.study.alignment.run_alignment: its numbers
    # are those of the study's folds); more threads would be reserved and never used
    threads: 1
    resources:
        mem_mb=study_mem_mb,
        runtime=config["runtime"],
    log:
        f"{LOGS}/alignment/{{dataset}}_{{model}}.log",
    benchmark:
        f"{BENCH}/alignment/{{dataset}}_{{model}}.tsv"
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule figure_alignment:
    """Angle to backprop against epoch, one line per rule and configuration, one column per dataset."""
    input:
        alignment_outputs(),
    output:
        png=report(f"{RESULTS}/figures/alignment.png", caption="../report/alignment_figure.rst",
                   category="Alignment", labels={"figure": "alignment"}),
        pdf=f"{RESULTS}/figures/alignment.pdf",
    params:
        argv=lambda w, input, output: argv(
            "alignment-figure", plugin_args(), "--alignment", list(input), "--out", output.png[: -len(".png")]),
    log:
        f"{LOGS}/figures/alignment.log",
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"
