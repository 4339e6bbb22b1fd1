# Datasets: the canonical files are found locally (data_dir, then system
# folders such as Debian's /usr/share/datasets/fashion-mnist), or downloaded
# with checksum verification; each dataset is then prepared once as a
# memory-mappable array that every study job shares.


rule download_data:
    """Fetch a dataset's canonical files and verify their checksums."""
    output:
        touch(f"{DATA_DIR}/{{dataset}}/.verified"),
    params:
        data_dir=lambda w, output: os.path.dirname(os.path.dirname(output[0])),
    log:
        f"{LOGS}/download/{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=60,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus download {wildcards.dataset} --data-dir {params.data_dir} > {log} 2>&1"


rule prepare_data:
    """Load (and optionally subsample) a dataset once; store it memory-mappable."""
    input:
        raw_inputs,
    output:
        X=f"{RESULTS}/data/{{dataset}}/X.npy",
        y=f"{RESULTS}/data/{{dataset}}/y.npy",
        meta=f"{RESULTS}/data/{{dataset}}/meta.json",
    params:
        max_samples=lambda w: dataset_opts(w.dataset).get("max_samples") or "",
        seed=config.get("seed", 1),
        outdir=lambda w, output: os.path.dirname(output.meta),
        data_dir=DATA_DIR,
    log:
        f"{LOGS}/prepare/{{dataset}}.log",
    benchmark:
        f"{BENCH}/prepare/{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=lambda w: 3 * _DATASET_MB.get(w.dataset, 1000) + 500,
        runtime=30,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus prepare {wildcards.dataset} --out {params.outdir} --data-dir {params.data_dir} "
        "--seed {params.seed} "
        "$( [ -n '{params.max_samples}' ] && echo --max-samples {params.max_samples} ) "
        "> {log} 2>&1"
