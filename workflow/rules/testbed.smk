# The testbed: a small GPT-2 trained on the world corpus, and the check that it knows the facts.


# Tokenizer + model, saved with save_pretrained.
rule testbed_train:
    input:
        config="results/{model}/config/testbed.json",
        corpus=corpus_path(),
    output:
        model=protected(directory("results/{model}/testbed/model")),
    log:
        "logs/testbed_train/{model}.log",
    benchmark:
        "benchmarks/testbed_train/{model}.tsv"
    threads: config["testbed"]["threads"]
    resources:
        **resources_for("testbed_train"),
    conda:
        software_env()
    shell:
        "echo 'testbed_train: training takes minutes; its progress bar is in {log}' >&2; "
        "seqedit train-testbed --config {input.config} --corpus {input.corpus}"
        " --out {output.model} --threads {threads} > {log} 2>&1"


# Accuracy of the unedited testbed on the records the edit runs use; fails below the thresholds.
rule testbed_check:
    input:
        config="results/{model}/config/knowledge_check.json",
        model=rules.testbed_train.output.model,
        records=records_path(),
    output:
        report="results/{model}/testbed/knowledge_check.json",
    params:
        kind=records_kind(),
    log:
        "logs/testbed_check/{model}.log",
    benchmark:
        "benchmarks/testbed_check/{model}.tsv"
    threads: 1
    resources:
        **resources_for("testbed_check"),
    conda:
        software_env()
    shell:
        "seqedit check-knowledge --config {input.config} --model {input.model}"
        " --records {input.records} --kind {params.kind} --out {output.report}"
        " --threads {threads} > {log} 2>&1"
