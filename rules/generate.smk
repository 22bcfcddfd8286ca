# Prompts per model x dataset, generation (entropy recorded in the sampling pass) and reference scoring.
# Params are only what changes the results; execution settings (batch and shard sizes, backend, device,
# GPU memory) are read from the configuration by the jobs, so changing them reruns nothing.


rule select_prompts:
    input:
        model=get_model_folder,
        examples=rules.prepare_dataset.output.examples,
    output:
        prompts=P("prompts"),
        meta=P("prompts", ".json"),
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
    params:
        model_path=get_model_path,
        chat=get_chat,
        text_rules=lookup(dpath="datasets/{dataset}/text_rules", within=config),
        selection=get_selection,
        chat_instruction=get_chat_instruction,
    script:
        "../workflow_scripts/select_prompts.py"


rule generate:
    input:
        unpack(get_generate_calibration),
        model=get_model_folder,
        prompts=rules.select_prompts.output.prompts,
    output:
        generations=P("generations"),
        meta=P("generations", ".json"),
    log:
        f"{RD}/logs/generate/{{dataset}}/{{model}}/{{setting}}.log",
    benchmark:
        f"{RD}/benchmarks/generate/{{dataset}}/{{model}}/{{setting}}.tsv"
    conda:
        "../envs/inference.yaml"
    threads: lookup(dpath="threads", within=config)
    resources:
        **GPU_SITE,
        gpu=PLAN.gpus,
        mem_mb=PLAN.mem_by_plan("generate", 16000),
        runtime=PLAN.runtime_by_plan("generate", 120, 15),
        nodes=1,  # a multi-GPU job's GPUs on one node: the model's layers are spread over them
    params:
        execution=execution_settings(
            "device", "gpu_memory_gb", "generation/batch_size", "generation/shard_size", "generation/backend"
        ),
        model_path=get_model_path,
        setting=get_setting,
        sampling=get_sampling,
        seed=lookup(dpath="seed", within=config),
        dtype=get_dtype,
        precision=lookup(dpath="precision", within=config),
    script:
        "../workflow_scripts/generate.py"


rule score:
    input:
        model=get_model_folder,
        prompts=rules.select_prompts.output.prompts,
    output:
        scores=P("scores"),
        meta=P("scores", ".json"),
    log:
        f"{RD}/logs/score/{{dataset}}/{{model}}.log",
    benchmark:
        f"{RD}/benchmarks/score/{{dataset}}/{{model}}.tsv"
    conda:
        "../envs/inference.yaml"
    threads: lookup(dpath="threads", within=config)
    resources:
        **GPU_SITE,
        gpu=PLAN.gpus,
        mem_mb=PLAN.mem_by_plan("score", 16000),
        runtime=PLAN.runtime_by_plan("score", 30, 4),
        nodes=1,  # a multi-GPU job's GPUs on one node: the model's layers are spread over them
    params:
        execution=execution_settings("device", "gpu_memory_gb", "scoring/batch_size", "generation/shard_size"),
        model_path=get_model_path,
        settings=get_settings("paper"),  # the paper's settings only: nothing beyond the paper holds them back
        truncation_epsilon=lookup(dpath="scoring/truncation_epsilon", within=config),
        dtype=get_dtype,
        precision=lookup(dpath="precision", within=config),
    script:
        "../workflow_scripts/score.py"


# The beyond-paper settings (truncation, Mirostat, the calibrated samplers) of a model, scored apart: the
# calibrated ones wait for the model's future-entropy predictor, the paper's scores never do.
use rule score as score_extra with:
    input:
        unpack(get_score_calibration),
        model=get_model_folder,
        prompts=rules.select_prompts.output.prompts,
    output:
        scores=P("scores_extra"),
        meta=P("scores_extra", ".json"),
    log:
        f"{RD}/logs/score_extra/{{dataset}}/{{model}}.log",
    benchmark:
        f"{RD}/benchmarks/score_extra/{{dataset}}/{{model}}.tsv"
    resources:
        **GPU_SITE,
        gpu=PLAN.gpus,
        mem_mb=PLAN.mem_by_plan("score", 16000),
        runtime=PLAN.runtime_by_plan("score_extra", 30, 4),
        nodes=1,
    params:
        execution=execution_settings("device", "gpu_memory_gb", "scoring/batch_size", "generation/shard_size"),
        model_path=get_model_path,
        settings=get_settings("extra"),
        truncation_epsilon=lookup(dpath="scoring/truncation_epsilon", within=config),
        dtype=get_dtype,
        precision=lookup(dpath="precision", within=config),
