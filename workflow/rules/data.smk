# Datasets: the canonical files are found locally (data_dir, then system
# folders such as Debian's /usr/share/datasets/fashion-mnist), or downloaded
# with checksum verification; each dataset is then prepared once as a
# memory-mappable array that every study job shares.


rule download_data:
    """Fetch a dataset's canonical files and verify their checksums."""
    output:
        touch(f"{DATA_DIR}/{{dataset}}/.verified"),
    params:
        argv=lambda w, output: argv("download", w.dataset, "--data-dir", os.path.dirname(os.path.dirname(output[0]))),
    log:
        f"{LOGS}/download/{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=60,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"


rule prepare_data:
    """Load (and optionally subsample) a dataset once; store it memory-mappable."""
    input:
        raw_inputs,
    output:
        X=f"{RESULTS}/data/{{dataset}}/X.npy",
        y=f"{RESULTS}/data/{{dataset}}/y.npy",
        meta=f"{RESULTS}/data/{{dataset}}/meta.json",
    params:
        argv=lambda w, output: argv(
            "prepare", w.dataset, "--out", os.path.dirname(output.meta), "--data-dir", DATA_DIR,
            "--seed", config["seed"],
            *(["--max-samples", dataset_opts(w.dataset)["max_samples"]]
              if dataset_opts(w.dataset).get("max_samples") else [])),
    log:
        f"{LOGS}/prepare/{{dataset}}.log",
    benchmark:
        f"{BENCH}/prepare/{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=prepare_mem_mb,
        runtime=30,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "bioplaus {params.argv} > {log:q} 2>&1"
