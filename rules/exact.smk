# Section 5 made runnable: Algorithm 1 (future-entropy scaling) solved exactly on finite-state
# models, Theorem 5.2 checked, against local / global temperature and truncation. CPU, seconds.


rule future_entropy_exact:
    output:
        table=f"{RD}/tables/future_entropy_exact.csv",
        steps=f"{RD}/tables/future_entropy_exact_steps.csv",
        noise=f"{RD}/tables/future_entropy_noise.csv",
        mc=f"{RD}/tables/future_entropy_mc_labels.csv",
    log:
        f"{RD}/logs/future_entropy_exact.log",
    benchmark:
        f"{RD}/benchmarks/future_entropy_exact.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        exact=lookup(dpath="exact", within=config),
        seed=lookup(dpath="seed", within=config),
    script:
        "../workflow_scripts/future_entropy_exact.py"


rule plot_future_entropy_exact:
    input:
        table=rules.future_entropy_exact.output.table,
        steps=rules.future_entropy_exact.output.steps,
        noise=rules.future_entropy_exact.output.noise,
        mc=rules.future_entropy_exact.output.mc,
    output:
        png=report(f"{RD}/figures/future_entropy_exact.png", caption="report/exact.rst", category="Figures"),
        pdf=f"{RD}/figures/future_entropy_exact.pdf",
    log:
        f"{RD}/logs/plot_future_entropy_exact.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/plot_future_entropy_exact.py"
