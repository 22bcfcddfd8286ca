# Prompts per model x dataset, generation (entropy recorded in the sampling pass) and reference scoring.


rule select_prompts:
    input:
        model=get_model_folder,
        examples=rules.prepare_dataset.output.examples,
    output:
        prompts=f"{RD}/prompts/{{dataset}}/{{model}}.parquet",
        meta=f"{RD}/prompts/{{dataset}}/{{model}}.json",
    params:
        model_path=get_model_path,
        chat=get_chat,
        generation=lookup(dpath="generation", within=config),
        text_rules=lookup(dpath="datasets/{dataset}/text_rules", within=config),
    log:
        f"{RD}/logs/select_prompts/{{dataset}}/{{model}}.log",
    benchmark:
        f"{RD}/benchmarks/select_prompts/{{dataset}}/{{model}}.tsv"
    conda:
        "../envs/inference.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../workflow_scripts/select_prompts.py"


rule generate:
    input:
        unpack(get_generate_calibration),
        model=get_model_folder,
        prompts=rules.select_prompts.output.prompts,
    output:
        generations=f"{RD}/generations/{{dataset}}/{{model}}/{{setting}}.parquet",
        meta=f"{RD}/generations/{{dataset}}/{{model}}/{{setting}}.json",
    params:
        model_path=get_model_path,
        setting=get_setting,
        generation=lookup(dpath="generation", within=config),
        seed=lookup(dpath="seed", within=config),
        dtype=lookup(dpath="dtype", within=config),
        device=lookup(dpath="device", within=config),
        precision=lookup(dpath="precision", within=config),
        gpu_memory_gb=lookup(dpath="gpu_memory_gb", within=config),
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
        prompts=rules.select_prompts.output.prompts,
    output:
        scores=f"{RD}/scores/{{dataset}}/{{model}}.parquet",
        meta=f"{RD}/scores/{{dataset}}/{{model}}.json",
    params:
        model_path=get_model_path,
        settings=get_settings,
        generation=lookup(dpath="generation", within=config),
        scoring=lookup(dpath="scoring", within=config),
        dtype=lookup(dpath="dtype", within=config),
        device=lookup(dpath="device", within=config),
        precision=lookup(dpath="precision", within=config),
        gpu_memory_gb=lookup(dpath="gpu_memory_gb", within=config),
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
