# Sample quality vs entropy (paper Figure 5): excerpts bucketed by entropy, MAUVE per bucket.


localrules:
    download_featurizer,


rule download_featurizer:
    output:
        directory(GRID.download_pattern("featurizer")),
    log:
        f"{RD}/logs/download_featurizer/{{featurizer}}--{{source}}.log",
    conda:
        "../envs/inference.yaml"
    threads: 1
    params:
        execution=execution_settings("hf_cache_dir"),
        name="{featurizer}",
        repo_id=lookup(dpath="mauve/featurizers/{featurizer}/repo_id", within=config),
        revision=lookup(dpath="mauve/featurizers/{featurizer}/revision", within=config),
    script:
        "../workflow_scripts/download_model.py"


rule mauve_excerpts:
    input:
        unpack(get_excerpt_inputs),
    output:
        excerpts=f"{RD}/mauve/{{part}}/{{dataset}}/excerpts.parquet",
    log:
        f"{RD}/logs/mauve_excerpts/{{part}}/{{dataset}}.log",
    benchmark:
        f"{RD}/benchmarks/mauve_excerpts/{{part}}/{{dataset}}.tsv"
    conda:
        "../envs/inference.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        jobs=get_excerpt_jobs,
        window=lookup(dpath="mauve/window", within=config),
    script:
        "../workflow_scripts/mauve_excerpts.py"


rule mauve_features:
    input:
        excerpts=rules.mauve_excerpts.output.excerpts,
        featurizer=get_featurizer_folder,
    output:
        features=f"{RD}/mauve/{{part}}/{{dataset}}/features_{{featurizer}}.parquet",
    log:
        f"{RD}/logs/mauve_features/{{part}}/{{dataset}}/{{featurizer}}.log",
    benchmark:
        f"{RD}/benchmarks/mauve_features/{{part}}/{{dataset}}/{{featurizer}}.tsv"
    conda:
        "../envs/inference.yaml"
    threads: lookup(dpath="threads", within=config)
    resources:
        **(GPU_SITE if any(f["source"] == "hf" for f in config["mauve"]["featurizers"].values()) else {}),
        gpu=PLAN.featurizer_gpus,
        nodes=1,
        mem_mb=16000,
        runtime=120,
    params:
        execution=execution_settings("device"),
        spec=lookup(dpath="mauve/featurizers/{featurizer}", within=config),
        model_path=get_featurizer_path,
    script:
        "../workflow_scripts/mauve_features.py"


rule mauve_buckets:
    input:
        excerpts=rules.mauve_excerpts.output.excerpts,
        features=rules.mauve_features.output.features,
    output:
        table=f"{RD}/mauve/{{part}}/{{dataset}}/buckets_{{featurizer}}.csv",
    log:
        f"{RD}/logs/mauve_buckets/{{part}}/{{dataset}}/{{featurizer}}.log",
    benchmark:
        f"{RD}/benchmarks/mauve_buckets/{{part}}/{{dataset}}/{{featurizer}}.tsv"
    conda:
        "../envs/inference.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        cfg=lookup(dpath="mauve", within=config),
        seed=lookup(dpath="seed", within=config),
    script:
        "../workflow_scripts/mauve_buckets.py"


rule mauve_summary:
    input:
        tables=get_mauve_tables("paper"),
        # in params.datasets' order
        excerpts=expand(rules.mauve_excerpts.output.excerpts, part="paper", dataset=sorted(DATASETS)),
        summaries=[rules.aggregate.output.summary],
    output:
        table=report(f"{RD}/tables/mauve_buckets.csv", caption="report/mauve_table.rst", category="Tables"),
        examples=report(f"{RD}/mauve/examples.md", caption="report/mauve_examples.rst", category="Excerpts"),
        png=report(f"{RD}/figures/mauve.png", caption="report/mauve.rst", category="Figures"),
        pdf=f"{RD}/figures/mauve.pdf",
    log:
        f"{RD}/logs/mauve_summary.log",
    conda:
        "../envs/inference.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        datasets=sorted(DATASETS),
        seed=lookup(dpath="seed", within=config),
    script:
        "../workflow_scripts/mauve_summary.py"


# MAUVE of the settings beyond the paper in mauve.settings (the calibrated samplers'), apart from Figure 5.
use rule mauve_summary as mauve_summary_extra with:
    input:
        tables=get_mauve_tables("extra"),
        excerpts=expand(rules.mauve_excerpts.output.excerpts, part="extra", dataset=sorted(DATASETS)),
        summaries=[rules.aggregate.output.summary, rules.aggregate_extra.output.summary],
    output:
        table=report(f"{RD}/tables/mauve_buckets_extra.csv", caption="report/mauve_table.rst", category="Tables"),
        examples=report(f"{RD}/mauve/examples_extra.md", caption="report/mauve_examples.rst", category="Excerpts"),
        png=report(f"{RD}/figures/mauve_extra.png", caption="report/mauve.rst", category="Figures"),
        pdf=f"{RD}/figures/mauve_extra.pdf",
    log:
        f"{RD}/logs/mauve_summary_extra.log",
