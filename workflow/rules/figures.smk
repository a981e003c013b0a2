# The study's numbers and figures: every run collected into one file, one papermill-executed
# notebook per figure (notebooks/<name>.ipynb, the executed copy kept under results/), and the
# rendered report.


# All runs' metrics, curves, drift, per-round info and timing in one file the notebooks read.
rule study_collect:
    input:
        runs=get_run_files,
    output:
        study="results/{model}/study/study.json",
    params:
        run_dirs=get_run_dirs,
    log:
        "logs/study_collect/{model}.log",
    benchmark:
        "benchmarks/study_collect/{model}.tsv"
    conda:
        software_env()
    shell:
        "seqedit collect --runs {params.run_dirs} --out {output.study} > {log} 2>&1"


# Edit curves of the main comparison (mean and 95% interval over seeds).
rule figure_edit_curves:
    input:
        notebook="notebooks/edit_curves.ipynb",
        study=rules.study_collect.output.study,
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
        out_dir=figure_dir,
    log:
        "logs/figure_edit_curves/{model}.log",
    benchmark:
        "benchmarks/figure_edit_curves/{model}.tsv"
    conda:
        software_env()
    shell:
        "papermill {input.notebook} {output.notebook} -k python3 --log-output"
        " -r study {input.study:q} -r out_dir {params.out_dir:q}"
        " -r model {wildcards.model} > {log} 2>&1"


use rule figure_edit_curves as figure_results_table with:
    input:
        notebook="notebooks/results_table.ipynb",
        study=rules.study_collect.output.study,
    output:
        notebook="results/{model}/notebooks/results_table.ipynb",
        png=report(
            "figures/{model}_results_table.png",
            caption="../report/results_table.rst",
            category="Final results",
            labels={"model": "{model}", "format": "png"},
        ),
        pdf=report(
            "figures/{model}_results_table.pdf",
            caption="../report/results_table.rst",
            category="Final results",
            labels={"model": "{model}", "format": "pdf"},
        ),
    log:
        "logs/figure_results_table/{model}.log",
    benchmark:
        "benchmarks/figure_results_table/{model}.tsv"


use rule figure_edit_curves as figure_ablations with:
    input:
        notebook="notebooks/ablations.ipynb",
        study=rules.study_collect.output.study,
    output:
        notebook="results/{model}/notebooks/ablations.ipynb",
        png=report(
            "figures/{model}_ablations.png",
            caption="../report/ablations.rst",
            category="Ablations",
            labels={"model": "{model}", "format": "png"},
        ),
        pdf=report(
            "figures/{model}_ablations.pdf",
            caption="../report/ablations.rst",
            category="Ablations",
            labels={"model": "{model}", "format": "pdf"},
        ),
    log:
        "logs/figure_ablations/{model}.log",
    benchmark:
        "benchmarks/figure_ablations/{model}.tsv"


use rule figure_edit_curves as figure_drift with:
    input:
        notebook="notebooks/drift.ipynb",
        study=rules.study_collect.output.study,
    output:
        notebook="results/{model}/notebooks/drift.ipynb",
        png=report(
            "figures/{model}_drift.png",
            caption="../report/drift.rst",
            category="Model drift",
            labels={"model": "{model}", "format": "png"},
        ),
        pdf=report(
            "figures/{model}_drift.pdf",
            caption="../report/drift.rst",
            category="Model drift",
            labels={"model": "{model}", "format": "pdf"},
        ),
    log:
        "logs/figure_drift/{model}.log",
    benchmark:
        "benchmarks/figure_drift/{model}.tsv"


use rule figure_edit_curves as figure_hidden_shift with:
    input:
        notebook="notebooks/hidden_shift.ipynb",
        study=rules.study_collect.output.study,
    output:
        notebook="results/{model}/notebooks/hidden_shift.ipynb",
        png=report(
            "figures/{model}_hidden_shift.png",
            caption="../report/hidden_shift.rst",
            category="Hidden-state shift",
            labels={"model": "{model}", "format": "png"},
        ),
        pdf=report(
            "figures/{model}_hidden_shift.pdf",
            caption="../report/hidden_shift.rst",
            category="Hidden-state shift",
            labels={"model": "{model}", "format": "pdf"},
        ),
    log:
        "logs/figure_hidden_shift/{model}.log",
    benchmark:
        "benchmarks/figure_hidden_shift/{model}.tsv"


use rule figure_edit_curves as figure_neurons with:
    input:
        notebook="notebooks/neurons.ipynb",
        study=rules.study_collect.output.study,
    output:
        notebook="results/{model}/notebooks/neurons.ipynb",
        png=report(
            "figures/{model}_neurons.png",
            caption="../report/neurons.rst",
            category="Neurons",
            labels={"model": "{model}", "format": "png"},
        ),
        pdf=report(
            "figures/{model}_neurons.pdf",
            caption="../report/neurons.rst",
            category="Neurons",
            labels={"model": "{model}", "format": "pdf"},
        ),
    log:
        "logs/figure_neurons/{model}.log",
    benchmark:
        "benchmarks/figure_neurons/{model}.tsv"


use rule figure_edit_curves as figure_cost with:
    input:
        notebook="notebooks/cost.ipynb",
        study=rules.study_collect.output.study,
    output:
        notebook="results/{model}/notebooks/cost.ipynb",
        png=report(
            "figures/{model}_cost.png",
            caption="../report/cost.rst",
            category="Cost",
            labels={"model": "{model}", "format": "png"},
        ),
        pdf=report(
            "figures/{model}_cost.pdf",
            caption="../report/cost.rst",
            category="Cost",
            labels={"model": "{model}", "format": "pdf"},
        ),
    log:
        "logs/figure_cost/{model}.log",
    benchmark:
        "benchmarks/figure_cost/{model}.tsv"


# The report (HTML and PDF): setup, methods, every figure with its caption, the tables, the
# claims checklist and provenance, built from the collected study and the figures.
rule report_render:
    input:
        study=rules.study_collect.output.study,
        figures=expand("figures/{{model}}_{figure}.png", figure=FIGURES),
        captions=caption_files(),
        knowledge_check=knowledge_check_input(),
    output:
        html=report(
            "results/{model}/report/report.html",
            caption="../report/report.rst",
            category="Report",
            labels={"model": "{model}", "format": "html"},
        ),
        pdf=report(
            "results/{model}/report/report.pdf",
            caption="../report/report.rst",
            category="Report",
            labels={"model": "{model}", "format": "pdf"},
        ),
    params:
        knowledge_check=knowledge_check_arg,
    log:
        "logs/report_render/{model}.log",
    benchmark:
        "benchmarks/report_render/{model}.tsv"
    conda:
        software_env()
    shell:
        "seqedit report --study {input.study} --figures {input.figures} --captions {input.captions}"
        " {params.knowledge_check} --html {output.html} --pdf {output.pdf} > {log} 2>&1"
