# Causal tracing of the unedited model (tracing.enabled): per-layer indirect effect of the MLP
# output at the subject's last token, the layers it suggests, and its figure.


rule trace_run:
    input:
        config="results/{model}/config/tracing.json",
        model=model_input(),
        records=records_path(),
    output:
        tracing="results/{model}/tracing/tracing.json",
    params:
        model=model_arg,
        kind=records_kind(),
    log:
        "logs/trace_run/{model}.log",
    benchmark:
        "benchmarks/trace_run/{model}.tsv"
    threads: 2
    resources:
        **resources_for("trace_run"),
    conda:
        software_env()
    shell:
        "seqedit trace --config {input.config} --model {params.model} --records {input.records}"
        " --kind {params.kind} --out {output.tracing} --threads {threads} > {log} 2>&1"


# Indirect effect per layer (mean and 95% interval over the traced facts), peak and MEMIT window marked.
rule figure_tracing:
    input:
        notebook=own_file("notebooks", "tracing.ipynb"),
        tracing=rules.trace_run.output.tracing,
    output:
        notebook="results/{model}/notebooks/tracing.ipynb",
        png=report(
            "figures/{model}_tracing.png",
            caption="../report/tracing.rst",
            category="Causal tracing",
            labels={"model": "{model}", "format": "png"},
        ),
        pdf=report(
            "figures/{model}_tracing.pdf",
            caption="../report/tracing.rst",
            category="Causal tracing",
            labels={"model": "{model}", "format": "pdf"},
        ),
    params:
        out_dir=figure_dir,
    log:
        "logs/figure_tracing/{model}.log",
    benchmark:
        "benchmarks/figure_tracing/{model}.tsv"
    conda:
        software_env()
    shell:
        "papermill {input.notebook} {output.notebook} -k python3 --log-output"
        " -r tracing {input.tracing:q} -r out_dir {params.out_dir:q}"
        " -r model {wildcards.model} > {log} 2>&1"
