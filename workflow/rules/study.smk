# One optuna study per (dataset, model, sampler). With `workers: 1` one job
# runs the study and writes its tables; with `workers: N` N worker jobs run
# trials of the same study (shared storage) and a gather job writes them.
# The study's storage (results/<d>/<m>/<s>/study.journal, or the configured
# RDB URL) is not a declared output: Snakemake never deletes it, so a killed
# or failed job resumes where it stopped when it is run again.


if WORKERS == 1:

    rule study:
        """Run (or resume) one study; write trials.csv and best.json."""
        input:
            rules.prepare_data.output,
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
            args=study_args,
            opt=optimiser_args,
            outdir=lambda w, output: os.path.dirname(output.trials),
        threads: study_threads()
        resources:
            mem_mb=study_mem_mb,
            runtime=config.get("runtime", 720),
        log:
            f"{LOGS}/study/{{dataset}}_{{model}}_{{sampler}}.log",
        benchmark:
            f"{BENCH}/study/{{dataset}}_{{model}}_{{sampler}}.tsv"
        conda:
            "../envs/bioplaus.yaml"
        shell:
            "bioplaus study {params.args} {params.opt} --out {params.outdir} "
            "--threads {threads} > {log} 2>&1"

else:

    rule study_worker:
        """One of `workers` processes running trials of the same study."""
        input:
            rules.prepare_data.output,
        output:
            touch(f"{RESULTS}/{{dataset}}/{{model}}/{{sampler}}/workers/{{worker}}.done"),
        params:
            args=study_args,
            opt=optimiser_args,
            outdir=lambda w: f"{RESULTS}/{w.dataset}/{w.model}/{w.sampler}",
        threads: study_threads()
        resources:
            mem_mb=study_mem_mb,
            runtime=config.get("runtime", 720),
        log:
            f"{LOGS}/study/{{dataset}}_{{model}}_{{sampler}}_worker{{worker}}.log",
        benchmark:
            f"{BENCH}/study/{{dataset}}_{{model}}_{{sampler}}_worker{{worker}}.tsv"
        conda:
            "../envs/bioplaus.yaml"
        shell:
            "bioplaus study {params.args} {params.opt} --out {params.outdir} "
            "--threads {threads} --worker-only > {log} 2>&1"

    rule study:
        """Gather: write trials.csv and best.json once every worker is done."""
        input:
            data=rules.prepare_data.output,
            workers=expand(
                f"{RESULTS}/{{{{dataset}}}}/{{{{model}}}}/{{{{sampler}}}}/workers/{{worker}}.done",
                worker=range(WORKERS),
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
            args=study_args,
            opt=optimiser_args,
            outdir=lambda w, output: os.path.dirname(output.trials),
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        log:
            f"{LOGS}/study/{{dataset}}_{{model}}_{{sampler}}_gather.log",
        conda:
            "../envs/bioplaus.yaml"
        shell:
            "bioplaus export {params.args} {params.opt} --out {params.outdir} > {log} 2>&1"


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
        args=study_args,
        best=lambda w, input: " ".join(f"{s}={p}" for s, p in zip(SAMPLERS, input.best)),
        repeats=REPEATS,
    threads: study_threads()
    resources:
        mem_mb=study_mem_mb,
        runtime=config.get("runtime", 720),
    log:
        f"{LOGS}/repeats/{{dataset}}_{{model}}.log",
    benchmark:
        f"{BENCH}/repeats/{{dataset}}_{{model}}.tsv"
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus repeats {params.args} --out {output} --repeats {params.repeats} "
        "--best {params.best} --threads {threads} > {log} 2>&1"
