# Section 3 theory: singleton mass under power-law data (Figure 1 left), Proposition 3.1,
# and rank-frequency exponents of every dataset (Figure 1 right). CPU, seconds.


rule singleton_mass:
    output:
        mass=f"{RD}/tables/singleton_mass.csv",
        slopes=f"{RD}/tables/singleton_slopes.csv",
        prop31=f"{RD}/tables/prop31.csv",
    log:
        f"{RD}/logs/singleton_mass.log",
    benchmark:
        f"{RD}/benchmarks/singleton_mass.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        theory=lookup(dpath="theory", within=config),
        seed=lookup(dpath="seed", within=config),
    script:
        "../workflow_scripts/singleton_mass.py"


rule power_law:
    input:
        unpack(get_power_law_inputs),
    output:
        table=f"{RD}/tables/power_law.csv",
        curves=f"{RD}/tables/rank_frequency.parquet",
    log:
        f"{RD}/logs/power_law.log",
    benchmark:
        f"{RD}/benchmarks/power_law.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        top=lookup(dpath="theory/rank_top", within=config),
    script:
        "../workflow_scripts/power_law.py"


rule plot_theory:
    input:
        mass=rules.singleton_mass.output.mass,
        curves=rules.power_law.output.curves,
        table=rules.power_law.output.table,
    output:
        png=report(f"{RD}/figures/figure1_theory.png", caption="report/theory.rst", category="Figures"),
        pdf=f"{RD}/figures/figure1_theory.pdf",
    log:
        f"{RD}/logs/plot_theory.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/plot_theory.py"
