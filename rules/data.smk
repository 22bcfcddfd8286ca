# Datasets: find and read a corpus (or a pinned hub snapshot), split it by document, cut evaluation windows.


localrules:
    download_dataset,


rule download_dataset:
    output:
        directory(GRID.download_pattern("dataset")),
    log:
        f"{RD}/logs/download_dataset/{{dataset}}--{{source}}.log",
    conda:
        "../envs/inference.yaml"
    threads: 1
    params:
        execution=execution_settings("hf_cache_dir"),
        repo_id=lookup(dpath="datasets/{dataset}/repo_id", within=config),
        revision=lookup(dpath="datasets/{dataset}/revision", within=config),
    script:
        "../workflow_scripts/download_dataset.py"


rule prepare_dataset:
    input:
        raw=get_dataset_raw,
    output:
        docs=P("docs"),
        examples=P("examples"),
        calibration=P("calibration_windows"),
        sidecars=[P(k, ".json") for k in ("docs", "examples", "calibration_windows")],
    log:
        f"{RD}/logs/prepare_dataset/{{dataset}}.log",
    benchmark:
        f"{RD}/benchmarks/prepare_dataset/{{dataset}}.tsv"
    conda:
        "../envs/inference.yaml"
    threads: lookup(dpath="threads", within=config)
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        spec=lookup(dpath="datasets/{dataset}", within=config),
        seed=lookup(dpath="seed", within=config),
        calibration_needed=bool(CALIBRATED),  # a calibration split only for the calibrated samplers
    script:
        "../workflow_scripts/prepare_dataset.py"
