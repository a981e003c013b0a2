# Sequential knowledge editing on one shared core: the workflow's table of contents.
# Rules wire the `seqedit` CLI; every decision lives in workflow/rules/common.smk.

from snakemake.utils import min_version

min_version("9.19")  # the Slurm profile (profiles/slurm) needs Snakemake 9.19 or newer


# load configuration
# -----------------------------------------------------
configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


# load rules
# -----------------------------------------------------
include: "workflow/rules/common.smk"
include: "workflow/rules/config.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/testbed.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/edit.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/tracing.smk"


# target rules
# -----------------------------------------------------
rule all:
    input:
        get_final_output(),
    default_target: True
