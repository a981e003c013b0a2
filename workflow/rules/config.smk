# Stage config files: the resolved sections each `seqedit` subcommand reads (--config).
# The sections are params, so Snakemake reruns a stage exactly when its sections change.


# Sections of one model-level stage (testbed, knowledge_check, stats).
rule config_stage:
    output:
        "results/{model}/config/{stage}.json",
    params:
        sections=get_stage_sections,
    log:
        "logs/config_stage/{model}/{stage}.log",
    benchmark:
        "benchmarks/config_stage/{model}/{stage}.tsv"
    localrule: True
    conda:
        software_env()
    script:
        "../scripts/write_json.py"


# Sections of one edit run: the method's merged hyperparameters, the variant's overrides, the seed.
use rule config_stage as config_edit with:
    output:
        EDIT_CONFIG,
    params:
        sections=get_edit_sections,
    log:
        "logs/config_edit/{model}/{method}/{variant}/seed~{seed}.log",
    benchmark:
        "benchmarks/config_edit/{model}/{method}/{variant}/seed~{seed}.tsv"
    localrule: True


# Sections of the world generator; model-independent, so it lives beside the world.
use rule config_stage as config_data with:
    output:
        f"{WORLD_DIR}/config.json",
    params:
        sections=stage_config("data"),
    log:
        "logs/config_data/world.log",
    benchmark:
        "benchmarks/config_data/world.tsv"
    localrule: True
