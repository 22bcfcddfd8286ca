# Generation (entropy recorded in the sampling pass) and reference scoring, per model x dataset.


rule generate:
    input:
        unpack(get_generate_calibration),
        model=get_model_folder,
        examples=rules.prepare_dataset.output.examples,
    output:
        generations=f"{RD}/generations/{{dataset}}/{{model}}/{{setting}}.parquet",
        meta=f"{RD}/generations/{{dataset}}/{{model}}/{{setting}}.json",
    params:
        model_path=get_model_path,
        chat=get_chat,
        setting=get_setting,
        generation=lookup(dpath="generation", within=config),
        seed=lookup(dpath="seed", within=config),
        dtype=lookup(dpath="dtype", within=config),
        device=lookup(dpath="device", within=config),
    log:
        f"{RD}/logs/generate/{{dataset}}/{{model}}/{{setting}}.log",
    benchmark:
        f"{RD}/benchmarks/generate/{{dataset}}/{{model}}/{{setting}}.tsv"
    conda:
        "../envs/inference.yaml"
    threads: lookup(dpath="threads", within=config)
    resources:
        gpu=get_gpus,
        mem_mb=mem_by_size(16000),
        runtime=runtime_by_size(120, 15),
    script:
        "../workflow_scripts/generate.py"


rule score:
    input:
        unpack(get_score_calibration),
        model=get_model_folder,
        examples=rules.prepare_dataset.output.examples,
    output:
        scores=f"{RD}/scores/{{dataset}}/{{model}}.parquet",
        meta=f"{RD}/scores/{{dataset}}/{{model}}.json",
    params:
        model_path=get_model_path,
        chat=get_chat,
        settings=get_settings,
        generation=lookup(dpath="generation", within=config),
        scoring=lookup(dpath="scoring", within=config),
        dtype=lookup(dpath="dtype", within=config),
        device=lookup(dpath="device", within=config),
    log:
        f"{RD}/logs/score/{{dataset}}/{{model}}.log",
    benchmark:
        f"{RD}/benchmarks/score/{{dataset}}/{{model}}.tsv"
    conda:
        "../envs/inference.yaml"
    threads: lookup(dpath="threads", within=config)
    resources:
        gpu=get_gpus,
        mem_mb=mem_by_size(16000),
        runtime=runtime_by_size(30, 4),
    script:
        "../workflow_scripts/score.py"
