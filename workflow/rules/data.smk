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
