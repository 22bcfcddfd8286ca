# The trained future-entropy predictor (Section 5 made practical): Monte Carlo labels on
# calibration-split text, the head and its alpha fit, and the comparison table of every sampler.


rule calibration_labels:
    input:
        model=get_model_folder,
        windows=rules.prepare_dataset.output.calibration,
        examples=rules.prepare_dataset.output.examples,  # selection first: the windows follow the model's prompts
        prompts=rules.select_prompts.output.prompts,
    output:
        labels=P("labels"),
        meta=P("labels", ".json"),
    log:
        f"{RD}/logs/calibration_labels/{{dataset}}/{{model}}.log",
    benchmark:
        f"{RD}/benchmarks/calibration_labels/{{dataset}}/{{model}}.tsv"
    priority: 20  # on the critical path to the calibrated samplers' generations
    conda:
        "../envs/inference.yaml"
    threads: lookup(dpath="threads", within=config)
    resources:
        **GPU_SITE,
        gpu=PLAN.gpus,
        mem_mb=PLAN.mem_by_size(16000),
        runtime=PLAN.runtime_by_plan("calibration_labels", 60, 6),
        nodes=1,  # a multi-GPU job's GPUs on one node: the model's layers are spread over them
    params:
        execution=execution_settings("device", "gpu_memory_gb", "calibration/batch_size"),
        model_path=get_model_path,
        chat=get_chat,
        labels=config_subset(
            "calibration", ["horizon", "n_windows", "prefixes_per_window", "candidates", "rollouts", "test_fraction"]
        ),
        prompt_tokens=lookup(dpath="generation/prompt_tokens", within=config),
        stop_at_eos=lookup(dpath="generation/stop_at_eos", within=config),
        max_len=lookup(dpath="analysis/max_len", within=config),
        seed=lookup(dpath="seed", within=config),
        dtype=get_dtype,
    script:
        "../workflow_scripts/calibration_labels.py"


rule train_predictor:
    input:
        model=get_model_folder,
        labels=rules.calibration_labels.output.labels,
        windows=rules.prepare_dataset.output.calibration,
        examples=rules.prepare_dataset.output.examples,  # selection first: the windows follow the model's prompts
        prompts=rules.select_prompts.output.prompts,
    output:
        head=P("head"),
        settings=P("predictor"),
        tradeoff=P("tradeoff"),
    log:
        f"{RD}/logs/train_predictor/{{dataset}}/{{model}}.log",
    benchmark:
        f"{RD}/benchmarks/train_predictor/{{dataset}}/{{model}}.tsv"
    priority: 20  # on the critical path to the calibrated samplers' generations
    conda:
        "../envs/inference.yaml"
    threads: lookup(dpath="threads", within=config)
    resources:
        **GPU_SITE,
        gpu=PLAN.gpus,
        mem_mb=PLAN.mem_by_size(32000),
        runtime=PLAN.runtime_by_plan("train_predictor", 30, 3),
        nodes=1,  # a multi-GPU job's GPUs on one node: the model's layers are spread over them
    params:
        execution=execution_settings("device", "gpu_memory_gb", "calibration/batch_size"),
        model_path=get_model_path,
        chat=get_chat,
        samplers=get_calibrated_samplers,
        predictor=config_subset(
            "calibration",
            [
                "horizon",
                "candidates",
                "head",
                "val_fraction",
                "fit_windows",
                "step_buckets",
                "alpha_bounds",
                "tradeoff_alphas",
                "mirostat_eta",
                "variants",
            ],
        ),
        prompt_tokens=lookup(dpath="generation/prompt_tokens", within=config),
        max_len=lookup(dpath="analysis/max_len", within=config),
        seed=lookup(dpath="seed", within=config),
        dtype=get_dtype,
    script:
        "../workflow_scripts/train_predictor.py"


rule train_head:
    input:
        model=get_model_folder,
        labels=rules.calibration_labels.output.labels,
        calibration=rules.train_predictor.output.settings,
    output:
        head=P("head_seed"),
        settings=P("head_seed", ".json"),
    log:
        f"{RD}/logs/train_head/{{dataset}}/{{model}}/seed{{head_seed}}.log",
    benchmark:
        f"{RD}/benchmarks/train_head/{{dataset}}/{{model}}/seed{{head_seed}}.tsv"
    wildcard_constraints:
        head_seed=r"\d+",
    conda:
        "../envs/inference.yaml"
    threads: lookup(dpath="threads", within=config)
    resources:
        **GPU_SITE,
        gpu=PLAN.gpus,
        mem_mb=PLAN.mem_by_size(16000),
        runtime=PLAN.runtime_by_size(20, 2),
        nodes=1,
    params:
        execution=execution_settings("device", "gpu_memory_gb", "calibration/batch_size"),
        model_path=get_model_path,
        cal=config_subset("calibration", ["head", "val_fraction"]),
        dtype=get_dtype,
    script:
        "../workflow_scripts/train_head.py"


rule calibration_root:
    input:
        unpack(lambda wc: GRID.search_inputs(wc.dataset, wc.model, wc.search)),
        model=get_model_folder,
        prompts=rules.select_prompts.output.prompts,
    output:
        steps=P("root"),
        point=P("root_point"),
    log:
        f"{RD}/logs/calibration_root/{{dataset}}/{{model}}/{{search}}.log",
    benchmark:
        f"{RD}/benchmarks/calibration_root/{{dataset}}/{{model}}/{{search}}.tsv"
    wildcard_constraints:
        search=r"ancestral|future_entropy-s\d+",
    conda:
        "../envs/inference.yaml"
    threads: lookup(dpath="threads", within=config)
    resources:
        **GPU_SITE,
        gpu=PLAN.gpus,
        mem_mb=PLAN.mem_by_plan("generate", 16000),
        runtime=PLAN.runtime_by_size(240, 60),
        nodes=1,
    params:
        execution=execution_settings(
            "device", "gpu_memory_gb", "generation/batch_size", "generation/shard_size", "scoring/batch_size"
        ),
        model_path=get_model_path,
        root=lookup(dpath="calibration/root", within=config),
        analysis=config_subset("analysis", ["max_len", "reference_start", "estimator", "n_boot"]),
        sampling=get_sampling,
        truncation_epsilon=lookup(dpath="scoring/truncation_epsilon", within=config),
        seed=lookup(dpath="seed", within=config),
        dtype=get_dtype,
    script:
        "../workflow_scripts/calibration_root.py"


rule calibration_table:
    input:
        unpack(get_calibration_tables),
        summaries=[rules.aggregate.output.summary, rules.aggregate_extra.output.summary],
        per_prompt=[rules.aggregate.output.per_prompt, rules.aggregate_extra.output.per_prompt],
        searches=lambda wc: GRID.root_files()["roots"],
        points=lambda wc: GRID.root_files()["points"],
    output:
        table=report(
            f"{RD}/tables/calibration.csv",
            caption="report/calibration.rst",
            category="Tables",
        ),
        predictors=f"{RD}/tables/predictor.csv",
        tradeoff=f"{RD}/tables/tradeoff_tf.csv",
        study=f"{RD}/tables/calibration_study.csv",  # each method's log loss at EntCE = 0 (entcal.study)
        settings=f"{RD}/tables/calibration_settings.csv",  # every setting against temperature at its own entropy
        variants=f"{RD}/tables/predictor_variants.csv",  # the head against its variants and the baselines
        roots=f"{RD}/tables/calibration_roots.csv",  # every step of every root search (entcal.root_search)
        primary=f"{RD}/tables/calibration_primary.csv",  # the declared primary question, Holm over its cells
    log:
        f"{RD}/logs/calibration_table.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        n_boot=lookup(dpath="analysis/n_boot", within=config),
        seed=lookup(dpath="seed", within=config),
        estimator=lookup(dpath="analysis/estimator", within=config),
        root=lookup(dpath="calibration/root", within=config),
        primary=lookup(dpath="calibration/primary", within=config),
    script:
        "../workflow_scripts/calibration_table.py"


rule plot_calibration:
    input:
        table=rules.calibration_table.output.table,
        tradeoff=rules.calibration_table.output.tradeoff,
        study=rules.calibration_table.output.study,
        roots=rules.calibration_table.output.roots,
    output:
        png=report(
            f"{RD}/figures/calibration_tf.png",
            caption="report/calibration_tf.rst",
            category="Figures",
        ),
        pdf=f"{RD}/figures/calibration_tf.pdf",
        study_png=report(
            f"{RD}/figures/calibration_study.png",
            caption="report/calibration_study.rst",
            category="Figures",
        ),
        study_pdf=f"{RD}/figures/calibration_study.pdf",
    log:
        f"{RD}/logs/plot_calibration.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/plot_calibration.py"
