# One sequential editing run: a method, a variant (main or an ablation value), a seed, all
# batches, the curve along the way.
# The run manages {out_dir}/checkpoint/ itself, so a failed or interrupted run resumes.
rule edit_run:
    input:
        config=EDIT_CONFIG,
        model=model_input(),
        stats=rules.stats_collect.output.stats,
        records=records_path(),
        knowledge_check=knowledge_check_input(),
        consistency=consistency_files(),
    output:
        metrics="results/{model}/edit/{method}/{variant}/seed~{seed}/metrics.json",
        curve="results/{model}/edit/{method}/{variant}/seed~{seed}/curve.json",
        timing="results/{model}/edit/{method}/{variant}/seed~{seed}/timing.json",
        hidden="results/{model}/edit/{method}/{variant}/seed~{seed}/hidden.npz",
    params:
        model=model_arg,
        kind=records_kind(),
        out_dir=output_dir,
    log:
        "logs/edit_run/{model}/{method}/{variant}/seed~{seed}.log",
    benchmark:
        "benchmarks/edit_run/{model}/{method}/{variant}/seed~{seed}.tsv"
    threads: 1
    resources:
        **resources_for("edit_run"),
        # a resource, not a param: setting restore_from never reruns a finished run
        restore=restore_arg(),
    conda:
        software_env()
    shell:
        "echo 'edit_run {wildcards.method}/{wildcards.variant}/seed~{wildcards.seed}: progress in {log}' >&2; "
        "seqedit edit --config {input.config} --model {params.model}"
        " --stats {input.stats} --records {input.records} --kind {params.kind}"
        " --out-dir {params.out_dir} --threads {threads}{resources.restore} > {log} 2>&1"
