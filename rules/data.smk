# Datasets: find and read a corpus (or a pinned hub snapshot), split it by document, cut evaluation windows.


localrules:
    download_dataset,


rule download_dataset:
    output:
        directory(f"{DL}/datasets/{{dataset}}"),
    params:
        repo_id=lookup(dpath="datasets/{dataset}/repo_id", within=config),
        revision=lookup(dpath="datasets/{dataset}/revision", within=config),
        cache_dir=lookup(dpath="hf_cache_dir", within=config),
    log:
        f"{RD}/logs/download_dataset/{{dataset}}.log",
    conda:
        "../envs/inference.yaml"
    threads: 1
    script:
        "../workflow_scripts/download_dataset.py"


rule prepare_dataset:
    input:
        raw=get_dataset_raw,
    output:
        docs=f"{RD}/data/{{dataset}}/docs.parquet",
        examples=f"{RD}/data/{{dataset}}/examples.parquet",
        calibration=f"{RD}/data/{{dataset}}/calibration.parquet",
        sidecars=multiext(f"{RD}/data/{{dataset}}/", "docs.json", "examples.json", "calibration.json"),
    params:
        spec=lookup(dpath="datasets/{dataset}", within=config),
        seed=lookup(dpath="seed", within=config),
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
    script:
        "../workflow_scripts/prepare_dataset.py"
