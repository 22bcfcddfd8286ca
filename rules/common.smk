# Configuration, wildcard constraints and input functions: declarations and thin get_* functions. The computation
# behind them is the package's: the configuration's checks (entcal.loading), every output path and the grid's
# expansion (entcal.grid.Grid: rules take their output patterns from GRID.pattern, input functions the same paths
# from GRID.path), the resource planners (entcal.resources) and the run's lifecycle (entcal.lifecycle.Run, which
# the Snakefile calls). Input functions do no I/O, import no torch and touch no network.

import os
import re
import sys

from snakemake.exceptions import WorkflowError

# this workflow's own folder: the Snakefile's, also where another workflow uses it as a module (workflow.basedir is
# then the using workflow's folder); its own copy of the entcal package comes first
WORKFLOW_DIR = os.path.dirname(str(workflow.current_basedir))
if not os.path.isfile(os.path.join(WORKFLOW_DIR, "Snakefile")):
    raise WorkflowError(
        f"this workflow was loaded from {workflow.current_basedir}, not from a folder on this machine: use it as a "
        "module from a local clone (git clone, then `module ...: snakefile: '<clone>/Snakefile'`; docs/deploy.md)"
    )
sys.path.insert(0, f"{WORKFLOW_DIR}/workflow_scripts")
from entcal.config import SETTING_PATTERN, canonical, results_config
from entcal.fingerprint import stage_fingerprints
from entcal.grid import Grid
from entcal.lifecycle import Run
from entcal.loading import load_configuration
from entcal.provenance import provenance
from entcal.resources import ResourcePlan
from entcal.runtime import job_environment
from entcal.samplers import CALIBRATED as SAMPLERS_CALIBRATED

load_configuration(config, workflow, logger, WORKFLOW_DIR)  # checked, completed, in canonical key order
GRID = Grid(config)
RD = GRID.rd
DATASETS, MODELS, CALIBRATED = GRID.datasets, GRID.models, GRID.calibrated
P = GRID.pattern  # output patterns: P("generations") = "{results_dir}/generations/{dataset}/{model}/{setting}.parquet"
CODE = stage_fingerprints(f"{WORKFLOW_DIR}/workflow_scripts")  # each stage's code fingerprint (entcal.fingerprint)
PROVENANCE = provenance(canonical(results_config(config)), CODE)  # what dump_config records (entcal.provenance)
PLAN = ResourcePlan(config, GRID, f"{WORKFLOW_DIR}/config/model_shapes.yaml")  # the rules' resource functions
RUN = Run(workflow, rules, logger, config, GRID, CODE, PROVENANCE, PLAN.shapes, WORKFLOW_DIR)
# GPU rules' site resources: the GPU partition and model, when the site profile names them
# (otherwise the profile's default partition, and any GPU model)
GPU_SITE = {k: config[c] for k, c in (("slurm_partition", "gpu_partition"), ("gpu_model", "gpu_model")) if config[c]}

# jobs inherit this environment: the allocator settings that stop per-step page-fault churn (entcal.runtime)
os.environ.update(job_environment(os.environ))


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    dataset="|".join(map(re.escape, DATASETS)),
    setting=SETTING_PATTERN,
    featurizer="|".join(map(re.escape, config["mauve"]["featurizers"])) or "NONE",
    part="paper|extra",
    source="[0-9a-f]{10}",  # a download folder's key: the hash of its entry's source keys (entcal.grid)


def models_of_source(source):
    """Wildcard constraint: the configured models of one source (download_model: hf; convert_gguf: gguf)."""
    names = [m for m, spec in config["models"].items() if spec["source"] == source]
    return "|".join(map(re.escape, names)) or "NONE"


def execution_settings(*paths):
    """Params function for how a job runs, not what it computes (batch and shard sizes, the backend, the device, the
    GPU memory, the hub cache): the configuration's values at these paths ("generation/batch_size", "device"), nested
    as in the configuration. It takes `threads`, so Snakemake counts it as derived and leaves it out of the params
    that rerun a job: a changed batch size reruns nothing."""

    def settings(wildcards, threads):
        out = {}
        for path in paths:
            *parents, key = path.split("/")
            node, src = out, config
            for p in parents:
                node, src = node.setdefault(p, {}), src[p]
            node[key] = src[key]
        return out

    return settings


def get_dtype(wildcards):
    """Params function: the model's weight dtype (its own `dtype`, else the top-level one; `auto` is
    resolved by the job from what the machine computes natively, and recorded in its sidecar)."""
    return GRID.model_spec(wildcards.model).get("dtype") or config["dtype"]


def get_model_folder(wildcards):
    """Input function: the model folder of a job (trained, downloaded or local)."""
    return GRID.model_folder(wildcards.model, wildcards.dataset)


def get_model_path(wildcards):
    """Params function: the save_pretrained folder to load (a checkpoint's own subfolder)."""
    return GRID.model_path(wildcards.model, wildcards.dataset)


def get_train_budget(wildcards):
    """Params function: a trained model's budget, without the keys that do not change training
    (so that asking for checkpoint evaluation does not retrain the model)."""
    budget = dict(config["models"][wildcards.model]["train"])
    budget.pop("evaluate_checkpoints", None)
    return budget


def get_setting(wildcards):
    """Params function: the sampler setting dict behind a setting slug."""
    return GRID.setting(wildcards.model, wildcards.setting)


def get_settings(part):
    """Params function: the model's sampler settings of one part (entcal.grid.part_of: `paper` for score,
    `extra` for score_extra); scoring covers them all in one pass over the references."""
    return lambda wildcards: GRID.model_settings(wildcards.model, part)


def get_selection(wildcards):
    """Params function: the prompt-selection settings of a model (its own n_prompts and max_new_tokens, if it
    has them)."""
    keys = ["prompt_tokens", "max_new_tokens", "min_reference_tokens", "n_prompts", "max_context"]
    sel = config_subset("generation", keys)
    sel["n_prompts"] = GRID.model_spec(wildcards.model).get("n_prompts") or sel["n_prompts"]
    sel["max_new_tokens"] = GRID.max_new_tokens(wildcards.model)
    return sel | ({"context_rule": "authors"} if GRID.context_rule() == "authors" else {})


def get_sampling(wildcards):
    """Params function: the generation length (the model's own max_new_tokens, if it has one) and stopping."""
    g = {"max_new_tokens": GRID.max_new_tokens(wildcards.model), "stop_at_eos": config["generation"]["stop_at_eos"]}
    return g | ({"stop_at_context": True} if GRID.context_rule() == "authors" else {})


def get_chat_instruction(wildcards):
    """Params function: the user turn an instruct model's chat template wraps around a window of a corpus
    without instructions (None for base models, or where the dataset names none)."""
    return config["datasets"][wildcards.dataset].get("chat_instruction") if get_chat(wildcards) else None


def get_chat(wildcards):
    """Params function: instruct models see instructions through their chat template."""
    return bool(GRID.model_spec(wildcards.model)["instruct"])


def config_subset(section, keys):
    """Params: only these keys of a config section, the ones that change a rule's results (a change to
    any other key, such as a batch or shard size, reruns nothing)."""
    return {k: config[section][k] for k in keys}


def get_generate_calibration(wildcards):
    """Input function (unpacked): the predictor files, for a calibrated sampler setting only."""
    if get_setting(wildcards)["sampler"] in SAMPLERS_CALIBRATED:
        return GRID.calibration_files(wildcards.dataset, wildcards.model)
    return {}


def get_score_calibration(wildcards):
    """Input function (unpacked, score_extra): the predictor files, when any setting of the model needs them."""
    return GRID.calibration_files(wildcards.dataset, wildcards.model)


def get_calibrated_samplers(wildcards):
    """Params function: the calibrated samplers run for the model."""
    return GRID.calibrated_samplers(wildcards.model)


def get_calibration_tables(wildcards):
    """Input function: every calibrated model's predictor and teacher-forced trade-off."""
    return {
        "predictors": [GRID.path("predictor", dataset=d, model=m) for d in DATASETS for m in CALIBRATED],
        "tradeoffs": [GRID.path("tradeoff", dataset=d, model=m) for d in DATASETS for m in CALIBRATED],
    }


def get_final_outputs(benchmarks=True):
    """The files the default target asks for: every output of the rules of GRID.final_rules() (with
    ``benchmarks=False``, the inputs of benchmark_table, which collects the benchmark records once everything
    else is done). Call it once all rules are defined (lazily, as an input function)."""
    final = GRID.final_rules()
    names = [*final, *(["benchmark_table"] if benchmarks else [])]
    return [f for name in names for f in expand(list(getattr(rules, name).output), **final.get(name, {}))]


def get_final_targets(wildcards):
    """Input function of the default target: every final output, once the DAG is built (after a workflow that uses
    this one as a module has been read, so that RUN.check_hooks can see whether it hands on the hooks)."""
    RUN.check_hooks()
    return get_final_outputs()


def get_dataset_raw(wildcards):
    """Input function: the hub snapshot of an `hf` dataset; nothing for local corpora."""
    if config["datasets"][wildcards.dataset]["source"] == "hf":
        return GRID.download_path("dataset", dataset=wildcards.dataset)
    return []


def get_power_law_inputs(wildcards):
    """Input function: every dataset's documents (docs_<name>) and, where the workflow trains a
    tokenizer, its encoded training stream (ids_<name>) for the token-level exponent."""
    inputs = {f"docs_{d}": GRID.path("docs", dataset=d) for d in DATASETS}
    if any(m["source"] == "train" for m in config["models"].values()):
        inputs.update({f"ids_{d}": GRID.path("train_ids", dataset=d) for d in DATASETS})
    return inputs


def get_excerpt_jobs(wildcards):
    """Params function: the generation files of one dataset and part whose excerpts enter MAUVE."""
    return GRID.excerpt_jobs(wildcards.dataset, wildcards.part)


def get_excerpt_inputs(wildcards):
    """Input function: generation, score and model files behind the excerpts of one dataset and part."""
    jobs = get_excerpt_jobs(wildcards)
    return {
        "generations": [j["generations"] for j in jobs],
        "scores": sorted({j["scores"] for j in jobs}),
        "models": sorted({j["model_path"] for j in jobs}),
    }


def get_featurizer_path(wildcards):
    """Params function: the folder the featurizer loads (none for the packaged MiniLM)."""
    spec = config["mauve"]["featurizers"][wildcards.featurizer]
    if spec["source"] == "model":
        return GRID.model_folder(spec["model"], wildcards.dataset)
    if spec["source"] == "hf":
        return GRID.download_path("featurizer", featurizer=wildcards.featurizer)
    return None


def get_featurizer_folder(wildcards):
    """Input function: the featurizer's folder when a rule produces it."""
    path = get_featurizer_path(wildcards)
    return [path] if path else []


def get_mauve_tables(part):
    """Input function: every dataset x featurizer bucket table of one part."""
    return lambda wildcards: expand(
        rules.mauve_buckets.output.table, part=part, dataset=DATASETS, featurizer=list(config["mauve"]["featurizers"])
    )
