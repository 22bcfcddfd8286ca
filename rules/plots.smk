# Figures in the paper's layouts (PNG and PDF).


rule plot_per_step:
    input:
        per_step=rules.aggregate.output.per_step,
        summary=rules.aggregate.output.summary,
    output:
        png=report(
            f"{RD}/figures/per_step{{smooth}}.png",
            caption="report/per_step.rst",
            category="Figures",
        ),
        pdf=f"{RD}/figures/per_step{{smooth}}.pdf",
    log:
        f"{RD}/logs/plot_per_step{{smooth}}.log",
    wildcard_constraints:
        smooth="|_smoothed",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        smoothing=lookup(dpath="analysis/smoothing", within=config),
        smoothing_logloss=lookup(dpath="analysis/smoothing_logloss", within=config),
    script:
        "../workflow_scripts/plot_per_step.py"


rule plot_scaling:
    input:
        summary=rules.aggregate.output.summary,
        fits=rules.scaling_fits.output.fits,
    output:
        png=report(
            f"{RD}/figures/scaling.png",
            caption="report/scaling.rst",
            category="Figures",
        ),
        pdf=f"{RD}/figures/scaling.pdf",
    log:
        f"{RD}/logs/plot_scaling.log",
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
        "../workflow_scripts/plot_scaling.py"


rule plot_tradeoff:
    input:
        summaries=[rules.aggregate.output.summary],
    output:
        png=report(f"{RD}/figures/tradeoff.png", caption="report/tradeoff.rst", category="Figures"),
        pdf=f"{RD}/figures/tradeoff.pdf",
    log:
        f"{RD}/logs/plot_tradeoff.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        estimator=lookup(dpath="analysis/estimator", within=config),
    script:
        "../workflow_scripts/plot_tradeoff.py"


# Figure 4 with the samplers beyond the paper as markers (truncation samplers, Mirostat, calibrated samplers).
use rule plot_tradeoff as plot_tradeoff_extra with:
    input:
        summaries=[rules.aggregate.output.summary, rules.aggregate_extra.output.summary],
    output:
        png=report(f"{RD}/figures/tradeoff_samplers.png", caption="report/tradeoff.rst", category="Figures"),
        pdf=f"{RD}/figures/tradeoff_samplers.pdf",
    log:
        f"{RD}/logs/plot_tradeoff_extra.log",


rule plot_context:
    input:
        per_step=rules.aggregate.output.per_step,
        fits=rules.context_fits.output.fits,
    output:
        png=report(f"{RD}/figures/context_length.png", caption="report/context.rst", category="Figures"),
        pdf=f"{RD}/figures/context_length.pdf",
    log:
        f"{RD}/logs/plot_context.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        reference_start=lookup(dpath="analysis/reference_start", within=config),
    script:
        "../workflow_scripts/plot_context.py"


rule plot_data_scaling:
    input:
        summary=rules.aggregate.output.summary,
        fits=rules.scaling_fits.output.data_fits,
    output:
        png=report(f"{RD}/figures/data_scaling.png", caption="report/data_scaling.rst", category="Figures"),
        pdf=f"{RD}/figures/data_scaling.pdf",
    log:
        f"{RD}/logs/plot_data_scaling.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        estimator=lookup(dpath="analysis/estimator", within=config),
    script:
        "../workflow_scripts/plot_data_scaling.py"
