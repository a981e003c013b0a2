# Second moments of the edited layers' keys over the corpus: once per model, shared by every run.
rule stats_collect:
    input:
        config="results/{model}/config/stats.json",
        model=model_input(),
        corpus=corpus_path(),
    output:
        stats="results/{model}/stats/mom2.pt",
    params:
        model=model_arg,
    log:
        "logs/stats_collect/{model}.log",
    benchmark:
        "benchmarks/stats_collect/{model}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        software_env()
    shell:
        "seqedit stats --config {input.config} --model {params.model}"
        " --corpus {input.corpus} --out {output.stats} --threads {threads} > {log} 2>&1"
