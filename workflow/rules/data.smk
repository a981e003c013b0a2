# Where the edit records and the training corpus come from: the synthetic world, or a benchmark file.


# The synthetic world: edit records in CounterFact and ZsRE form, and the corpus stating its facts.
rule data_world:
    input:
        config=rules.config_data.output[0],
    output:
        counterfact=f"{WORLD_DIR}/counterfact.json",
        zsre=f"{WORLD_DIR}/zsre.json",
        corpus=f"{WORLD_DIR}/corpus.txt",
    params:
        out_dir=output_dir,
    log:
        "logs/data_world/world.log",
    benchmark:
        "benchmarks/data_world/world.tsv"
    conda:
        software_env()
    shell:
        "seqedit world --config {input.config} --out-dir {params.out_dir} > {log} 2>&1"


# A benchmark file missing at data.<source>_path: downloaded once from data.<source>_url and
# checked against data.<source>_sha256, or, with no URL or no network, a one-line error naming
# the file to place. Runs where the workflow starts (cluster nodes may be offline).
rule data_fetch:
    output:
        "data/{source}/download/{file}",
    params:
        args=fetch_args,
    log:
        "logs/data_fetch/{source}/{file}.log",
    localrule: True
    conda:
        software_env()
    shell:
        "seqedit fetch --out {output} {params.args} 2>&1 | tee {log}"


# The records the study uses (data.source counterfact or zsre): the first data.limit records of
# the benchmark file, read by the corpus, the knowledge check and every edit run. It reruns when
# the file's content changes (params.sha256), not when a copy only gives it a newer timestamp.
rule data_subset:
    input:
        benchmark_file,
    output:
        records="data/{source}/records.json",
    params:
        args=subset_args,
        sha256=benchmark_digest,
    log:
        "logs/data_subset/{source}.log",
    benchmark:
        "benchmarks/data_subset/{source}.tsv"
    conda:
        software_env()
    shell:
        "seqedit subset --records {input} --kind {wildcards.source}{params.args}"
        " --out {output.records} > {log} 2>&1"


# The testbed's corpus for benchmark records: every fact the knowledge check asks, stated true.
rule data_corpus:
    input:
        records=rules.data_subset.output.records,
    output:
        corpus="data/{source}/corpus.txt",
    log:
        "logs/data_corpus/{source}.log",
    benchmark:
        "benchmarks/data_corpus/{source}.tsv"
    conda:
        software_env()
    shell:
        "seqedit corpus --records {input.records} --kind {wildcards.source}"
        " --out {output.corpus} > {log} 2>&1"


# The records a pretrained model knows (known_filter()): those where the unedited model prefers
# the true object over the new one on the rewrite prompt. Every seed's stream is drawn from
# them; known.json holds the counts (tried, known) for the report.
rule data_known:
    input:
        config="results/{model}/config/known.json",
        model=model_input(),
        records=benchmark_records_path(),
    output:
        records="results/{model}/known/records.json",
        counts="results/{model}/known/known.json",
    params:
        model=model_arg,
        kind=records_kind(),
    log:
        "logs/data_known/{model}.log",
    benchmark:
        "benchmarks/data_known/{model}.tsv"
    threads: 1
    resources:
        **resources_for("data_known"),
    conda:
        software_env()
    shell:
        "seqedit known --config {input.config} --model {params.model} --records {input.records}"
        " --kind {params.kind} --out {output.counts} --records-out {output.records}"
        " --threads {threads} > {log} 2>&1"
