# Second moments of the edited layers' keys over the corpus, a text dataset or the model's own
# generations (stats.source): once per model, shared by every run. Protected (read-only once
# written), like the trained testbed: both cost the most to remake, so snakemake refuses to
# overwrite them until they are deleted. With restore_from set, generated texts come from the
# archive where they match (a resource, like the edit runs' archive: setting it reruns nothing).
# Another results folder of the same model (a tagged overlay, or the study beside one) lends its
# statistics where they were summed from the same model, settings and threads: copied, not summed.
rule stats_collect:
    input:
        config="results/{model}/config/stats.json",
        model=model_input(),
        corpus=stats_corpus_input(),
    output:
        stats=protected("results/{model}/stats/mom2.pt"),
    params:
        model=model_arg,
        corpus=stats_corpus_arg,
    log:
        "logs/stats_collect/{model}.log",
    benchmark:
        "benchmarks/stats_collect/{model}.tsv"
    threads: 2
    resources:
        **resources_for("stats_collect"),
        texts_from=texts_from_arg(),
        reuse=reuse_arg("stats/mom2.pt"),
    conda:
        software_env()
    shell:
        "echo 'stats_collect: progress in {log}' >&2; "
        "seqedit stats --config {input.config} --model {params.model}{params.corpus}"
        "{resources.texts_from}{resources.reuse} --out {output.stats} --threads {threads} > {log} 2>&1"
