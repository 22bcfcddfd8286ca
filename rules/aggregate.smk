# Aggregation: per-step curves, EntCE and its parts, scaling fits.


rule aggregate:
    input:
        generations=[generation_path(d, m, s["slug"]) for d, m, s in generation_jobs()],
        scores=sorted({score_path(d, m) for d, m, _ in generation_jobs()}),
    output:
        per_step=f"{RD}/tables/per_step.parquet",
        summary=report(
            f"{RD}/tables/summary.csv",
            caption="report/summary.rst",
            category="Tables",
        ),
    params:
        jobs=aggregate_jobs(),
        max_len=lookup(dpath="analysis/max_len", within=config),
    log:
        f"{RD}/logs/aggregate.log",
    benchmark:
        f"{RD}/benchmarks/aggregate.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../workflow_scripts/aggregate.py"


rule scaling_fits:
    input:
        summary=rules.aggregate.output.summary,
    output:
        fits=f"{RD}/tables/scaling_fits.csv",
    log:
        f"{RD}/logs/scaling_fits.log",
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/scaling_fits.py"


rule dump_config:
    output:
        f"{RD}/config.effective.yaml",
    params:
        config=config,
    log:
        f"{RD}/logs/dump_config.log",
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/dump_config.py"
