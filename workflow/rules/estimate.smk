# What this config will cost, before it runs: `snakemake estimate --cores N`
# (not part of `all`) writes the prediction of `bioplaus estimate` for N cores
# to results/estimate.txt and prints nothing else; the config passed is the
# one this run validated (config files, --config overrides, defaults; the
# storage password stripped), so it is the study `snakemake --cores N` would run.

import json


rule estimate:
    """Predicted CPU-hours (per model, total) and wall time on --cores cores, with p10-p90 intervals."""
    output:
        f"{RESULTS}/estimate.txt",
    params:
        config_json=lambda w: json.dumps(config, default=str),
        argv=lambda w, output: argv("estimate", plugin_args(), "--configfile", output[0] + ".config.json",
                                    "--cores", workflow.cores),
    log:
        f"{LOGS}/estimate.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/bioplaus.yaml"
    shell:
        "printf '%s' {params.config_json:q} > {output:q}.config.json && "
        "bioplaus {params.argv} > {output:q} 2> {log:q} && cat {output:q}"
