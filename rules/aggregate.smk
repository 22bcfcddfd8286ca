# Aggregation: per-step curves, EntCE and its parts, scaling fits.


rule aggregate:
    input:
        generations=[job["generations"] for job in GRID.aggregate_jobs("paper")],
        scores=sorted({job["scores"] for job in GRID.aggregate_jobs("paper")}),
    output:
        per_step=P("per_step"),
        per_prompt=P("per_prompt"),
        missing=report(  # empty here; rows where a run ended with failed jobs (common.smk: aggregate_finished)
            P("missing"),
            caption="report/missing.rst",
            category="Tables",
        ),
        summary=report(
            P("summary"),
            caption="report/summary.rst",
            category="Tables",
        ),
        bootstrap=P("bootstrap"),
    log:
        f"{RD}/logs/aggregate.log",
    benchmark:
        f"{RD}/benchmarks/aggregate.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        jobs=sorted(GRID.aggregate_jobs("paper"), key=lambda j: (j["dataset"], j["model"], j["setting"])),
        max_len=lookup(dpath="analysis/max_len", within=config),
        reference_start=lookup(dpath="analysis/reference_start", within=config),
        fidelity=lookup(dpath="fidelity", within=config),
        n_boot=lookup(dpath="analysis/n_boot", within=config),
        seed=lookup(dpath="seed", within=config),
        estimator=lookup(dpath="analysis/estimator", within=config),
    script:
        "../workflow_scripts/aggregate.py"


# The beyond-paper samplers' tables (entcal.grid.part_of), the same columns as the paper's, made apart.
use rule aggregate as aggregate_extra with:
    input:
        generations=[job["generations"] for job in GRID.aggregate_jobs("extra")],
        scores=sorted({job["scores"] for job in GRID.aggregate_jobs("extra")}),
    output:
        per_step=P("per_step_extra"),
        per_prompt=P("per_prompt_extra"),
        missing=report(P("missing_extra"), caption="report/missing.rst", category="Tables"),
        summary=report(P("summary_extra"), caption="report/summary_extra.rst", category="Tables"),
    log:
        f"{RD}/logs/aggregate_extra.log",
    benchmark:
        f"{RD}/benchmarks/aggregate_extra.tsv"
    params:
        jobs=sorted(GRID.aggregate_jobs("extra"), key=lambda j: (j["dataset"], j["model"], j["setting"])),
        max_len=lookup(dpath="analysis/max_len", within=config),
        reference_start=lookup(dpath="analysis/reference_start", within=config),
        fidelity=lookup(dpath="fidelity", within=config),
        n_boot=lookup(dpath="analysis/n_boot", within=config),  # standard errors; no table (aggregate.py)
        seed=lookup(dpath="seed", within=config),
        estimator=lookup(dpath="analysis/estimator", within=config),


rule scaling_fits:
    input:
        summary=rules.aggregate.output.summary,
        bootstrap=rules.aggregate.output.bootstrap,
        power_law=lambda wildcards: rules.power_law.output.table,  # rules/theory.smk, included later
    output:
        fits=f"{RD}/tables/scaling_fits.csv",
        data_fits=f"{RD}/tables/data_scaling_fits.csv",
    log:
        f"{RD}/logs/scaling_fits.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        estimator=lookup(dpath="analysis/estimator", within=config),
        size_axis=lookup(dpath="analysis/size_axis", within=config),
    script:
        "../workflow_scripts/scaling_fits.py"


# (dataset, model) of the paper's settings: the context fits read each one's prompt lengths
CONTEXT_PAIRS = sorted({(j["dataset"], j["model"]) for j in GRID.aggregate_jobs("paper")})


rule context_fits:
    input:
        per_step=rules.aggregate.output.per_step,
        prompts=[GRID.path("prompts", ".json", dataset=d, model=m) for d, m in CONTEXT_PAIRS],
    output:
        fits=f"{RD}/tables/context_fits.csv",
    log:
        f"{RD}/logs/context_fits.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        pairs=CONTEXT_PAIRS,
        reference_start=lookup(dpath="analysis/reference_start", within=config),
    script:
        "../workflow_scripts/context_fits.py"


rule dump_config:
    output:
        P("effective_config"),
        provenance=f"{RD}/provenance.json",
    log:
        f"{RD}/logs/dump_config.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        config=PROVENANCE["config"],
        provenance=PROVENANCE,
    script:
        "../workflow_scripts/dump_config.py"


rule benchmark_table:
    input:
        lambda wildcards: get_final_outputs(benchmarks=False),
    output:
        table=report(
            f"{RD}/tables/benchmarks.csv",
            caption="report/benchmarks.rst",
            category="Tables",
        ),
    log:
        f"{RD}/logs/benchmark_table.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        bench_dir=f"{RD}/benchmarks",
    script:
        "../workflow_scripts/benchmark_table.py"
