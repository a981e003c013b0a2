# Edit curves of all methods and seeds: papermill runs the notebook, the executed copy is kept.
rule figures_edit_curves:
    input:
        notebook="notebooks/edit_curves.ipynb",
        curves=get_curves,
    output:
        notebook="results/{model}/notebooks/edit_curves.ipynb",
        png=report(
            "figures/{model}_edit_curves.png",
            caption="../report/edit_curves.rst",
            category="Edit curves",
            labels={"model": "{model}", "format": "png"},
        ),
        pdf=report(
            "figures/{model}_edit_curves.pdf",
            caption="../report/edit_curves.rst",
            category="Edit curves",
            labels={"model": "{model}", "format": "pdf"},
        ),
    params:
        curves=joined_curves,
        out_dir=figure_dir,
    log:
        "logs/figures_edit_curves/{model}.log",
    benchmark:
        "benchmarks/figures_edit_curves/{model}.tsv"
    conda:
        software_env()
    shell:
        "papermill {input.notebook} {output.notebook} -k python3 --log-output"
        " -r curves {params.curves:q} -r out_dir {params.out_dir:q}"
        " -r model {wildcards.model} > {log} 2>&1"
