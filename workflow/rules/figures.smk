# The study's numbers and figures: every run collected into one file, one papermill-executed
# notebook per figure (notebooks/<name>.ipynb, the executed copy kept under results/), and the
# rendered report. These are cheap, so they run where snakemake runs (local rules), not as
# cluster jobs.


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
    localrule: True
    conda:
        software_env()
    shell:
        "seqedit collect --runs {params.run_dirs} --out {output.study} > {log} 2>&1"


# One papermill-executed notebook per figure (FIGURES, common.smk): notebooks/<name>.ipynb
# writes figures/<model>_<name>.{png,pdf}; the executed copy is kept under results/.
for _figure, _category in FIGURES.items():

    rule:
        name:
            f"figure_{_figure}"
        input:
            notebook=own_file("notebooks", f"{_figure}.ipynb"),
            study=rules.study_collect.output.study,
        output:
            notebook=f"results/{{model}}/notebooks/{_figure}.ipynb",
            png=report(
                f"figures/{{model}}_{_figure}.png",
                caption=f"../report/{_figure}.rst",
                category=_category,
                labels={"model": "{model}", "format": "png"},
            ),
            pdf=report(
                f"figures/{{model}}_{_figure}.pdf",
                caption=f"../report/{_figure}.rst",
                category=_category,
                labels={"model": "{model}", "format": "pdf"},
            ),
        params:
            out_dir=figure_dir,
        log:
            f"logs/figure_{_figure}/{{model}}.log",
        benchmark:
            f"benchmarks/figure_{_figure}/{{model}}.tsv"
        localrule: True
        conda:
            software_env()
        shell:
            "papermill {input.notebook} {output.notebook} -k python3 --log-output"
            " -r study {input.study:q} -r out_dir {params.out_dir:q}"
            " -r model {wildcards.model} > {log} 2>&1"


# The report (HTML and PDF): setup, methods, every figure with its caption, the tables, the
# claims checklist and provenance, built from the collected study and the figures.
rule report_render:
    input:
        study=rules.study_collect.output.study,
        figures=expand("figures/{{model}}_{figure}.png", figure=FIGURES),
        captions=caption_files(),
        knowledge_check=knowledge_check_input(),
        **report_extra_input(),
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
        extra=report_extra_arg,
    log:
        "logs/report_render/{model}.log",
    benchmark:
        "benchmarks/report_render/{model}.tsv"
    localrule: True
    conda:
        software_env()
    shell:
        "seqedit report --study {input.study} --figures {input.figures} --captions {input.captions}"
        " {params.knowledge_check}{params.extra} --html {output.html} --pdf {output.pdf} > {log} 2>&1"
