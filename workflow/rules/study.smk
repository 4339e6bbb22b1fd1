# One optuna study per (dataset, model, sampler). With `workers: 1` the study
# job runs the trials itself and writes its tables; with `workers: N`, N
# worker jobs run trials of the same study (shared storage) and the study job
# only gathers them into its tables. The study's storage
# (results/<d>/<m>/<s>/study.journal, or the configured RDB URL) is not a
# declared output: Snakemake never deletes it, so a killed or failed job
# resumes where it stopped when it is run again.


rule study_worker:
    """One of `workers` processes running trials of the same study (only with `workers` > 1)."""
    input:
        rules.prepare_data.output,
    output:
        touch(f"{RESULTS}/{{dataset}}/{{model}}/{{sampler}}/workers/{{worker}}.done"),
    params:
        argv=lambda w, threads: argv(
            "study", study_args(w), optimiser_args(w), "--out", f"{RESULTS}/{w.dataset}/{w.model}/{w.sampler}",
            "--threads", threads, "--worker-only"),
    threads: study_threads()
    resources:
        mem_mb=study_mem_mb,
        runtime=config["runtime"],
    log:
        f"{LOGS}/study/{{dataset}}_{{model}}_{{sampler}}_worker{{worker}}.log",
    benchmark:
        f"{BENCH}/study/{{dataset}}_{{model}}_{{sampler}}_worker{{worker}}.tsv"
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule study:
    """Run (or resume) one study, or gather its workers' trials; write trials.csv and best.json."""
    input:
        data=rules.prepare_data.output,
        workers=expand(
            f"{RESULTS}/{{{{dataset}}}}/{{{{model}}}}/{{{{sampler}}}}/workers/{{worker}}.done",
            worker=range(WORKERS) if WORKERS > 1 else [],
        ),
    output:
        trials=report(
            f"{RESULTS}/{{dataset}}/{{model}}/{{sampler}}/trials.csv",
            caption="../report/trials.rst",
            category="Trials",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}", "sampler": "{sampler}", "table": "trials"},
        ),
        best=f"{RESULTS}/{{dataset}}/{{model}}/{{sampler}}/best.json",
    params:
        argv=lambda w, output, threads: argv(
            "study" if WORKERS == 1 else "export", study_args(w), optimiser_args(w),
            "--out", os.path.dirname(output.trials), *(["--threads", threads] if WORKERS == 1 else [])),
    threads: study_threads() if WORKERS == 1 else 1
    resources:
        mem_mb=study_mem_mb if WORKERS == 1 else 1000,
        runtime=config["runtime"] if WORKERS == 1 else 10,
    log:
        f"{LOGS}/study/{{dataset}}_{{model}}_{{sampler}}.log",
    benchmark:
        f"{BENCH}/study/{{dataset}}_{{model}}_{{sampler}}.tsv"
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule repeats:
    """Noise floor: the default and each sampler's best configuration, refitted with new seeds."""
    input:
        data=rules.prepare_data.output,
        best=expand(f"{RESULTS}/{{{{dataset}}}}/{{{{model}}}}/{{sampler}}/best.json", sampler=SAMPLERS),
    output:
        report(
            f"{RESULTS}/{{dataset}}/{{model}}/repeats.csv",
            caption="../report/repeats.rst",
            category="Noise floor",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}", "table": "repeats"},
        ),
    params:
        argv=lambda w, input, output, threads: argv(
            "repeats", study_args(w), "--out", output[0], "--repeats", REPEATS,
            "--best", [f"{s}={p}" for s, p in zip(SAMPLERS, input.best)], "--threads", threads),
    threads: study_threads()
    resources:
        mem_mb=study_mem_mb,
        runtime=config["runtime"],
    log:
        f"{LOGS}/repeats/{{dataset}}_{{model}}.log",
    benchmark:
        f"{BENCH}/repeats/{{dataset}}_{{model}}.tsv"
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"
