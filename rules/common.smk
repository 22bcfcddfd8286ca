# Configuration checks, wildcard constraints, path helpers and input functions.
# Input functions here do no I/O beyond config lookups, import no torch and touch no network.

import re
import sys

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, f"{workflow.basedir}/workflow_scripts")
from entcal.config import CALIBRATED_SAMPLERS, apply_revision_lock, calibrated_models, check_config, checkpoint_models, duplicate_keys, schema_errors, setting_slug  # noqa: E402


CONFIG_FILES = list(workflow.overwrite_configfiles) or [f"{workflow.basedir}/config/config.yaml"]
_problems = [p for f in CONFIG_FILES for p in duplicate_keys(f)]
if not config.get("results_dir"):
    _problems.append(f"{', '.join(map(str, CONFIG_FILES))}: no results_dir. A configuration given with --configfile "
                     "replaces the paper grid (it is the default only without --configfile) and names its own results "
                     "folder, e.g. results_dir: results/mine")  # fmt: skip
_problems += [e for e in schema_errors(config, yaml.safe_load(open(f"{workflow.basedir}/config/schema.yaml")))
              if "'results_dir' is a required property" not in e]  # fmt: skip
if _problems:
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_problems))
validate(config, "../config/schema.yaml", set_default=True)
if config["revisions_lock"]:
    for note in apply_revision_lock(config, yaml.safe_load(open(config["revisions_lock"])) or {}):
        logger.warning(note)
check_config(config)

RD = config["results_dir"]
DL = config["downloads_dir"]
DATASETS = list(config["datasets"])


CHECKPOINTS = checkpoint_models(config)
MODELS = list(config["models"]) + list(CHECKPOINTS)
CALIBRATED = calibrated_models(config)  # models a future-entropy predictor is trained for


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    dataset="|".join(map(re.escape, DATASETS)),
    setting=r"[a-z_]+[0-9.e-]*-t[0-9.]+",
    featurizer="|".join(map(re.escape, config["mauve"]["featurizers"])) or "NONE",


def model_spec(model):
    """The config entry of a model (a checkpoint shares its trained model's entry)."""
    return config["models"][CHECKPOINTS[model][0] if model in CHECKPOINTS else model]


def model_settings(model):
    """Sampler settings (dicts with sampler, temperature, param, slug) run for a model.
    Checkpoints are sampled at temperature 1 only."""
    if model in CHECKPOINTS:
        s = {"sampler": "ancestral", "temperature": 1.0}
        return [dict(s, slug=setting_slug(s))]
    kind = "instruct" if config["models"][model]["instruct"] else "base"
    return [
        dict(s, slug=setting_slug(s))
        for s in config["samplers"][kind]
        if model in s.get("models", [model])
    ]


def model_folder(model, dataset):
    """The output folder that holds the model used on `dataset`, trained per dataset, downloaded
    or given (a checkpoint lives inside its trained model's folder)."""
    if model in CHECKPOINTS:
        return f"{RD}/models/{dataset}/{CHECKPOINTS[model][0]}"
    spec = config["models"][model]
    if spec["source"] == "train":
        return f"{RD}/models/{dataset}/{model}"
    if spec["source"] == "hf":
        return f"{DL}/models/{model}"
    return spec["path"]


def get_model_folder(wildcards):
    """Input function: the model folder for a generate/score job."""
    return model_folder(wildcards.model, wildcards.dataset)


def get_model_path(wildcards):
    """Params function: the save_pretrained folder to load (a checkpoint's own subfolder)."""
    folder = model_folder(wildcards.model, wildcards.dataset)
    if wildcards.model in CHECKPOINTS:
        return f"{folder}/checkpoints/tokens_{CHECKPOINTS[wildcards.model][1]}"
    return folder


def get_train_budget(wildcards):
    """Params function: a trained model's budget, without the keys that do not change training
    (so that asking for checkpoint evaluation does not retrain the model)."""
    budget = dict(config["models"][wildcards.model]["train"])
    budget.pop("evaluate_checkpoints", None)
    return budget


def train_tokens(model):
    """Training tokens seen by a trained model or checkpoint (None for hub and local models)."""
    if model in CHECKPOINTS:
        return CHECKPOINTS[model][1]
    spec, tr = config["models"][model], config["training"]
    if spec["source"] != "train":
        return None
    return spec["train"]["tokens"] // (tr["seq_len"] * tr["batch_size"]) * tr["seq_len"] * tr["batch_size"]


def get_setting(wildcards):
    """Params function: the sampler setting dict behind a setting slug."""
    for s in model_settings(wildcards.model):
        if s["slug"] == wildcards.setting:
            return s
    raise ValueError(f"model {wildcards.model!r} has no sampler setting {wildcards.setting!r}")


def get_settings(wildcards):
    """Params function: every sampler setting of the model (scoring covers them all in one pass)."""
    return model_settings(wildcards.model)


def get_chat(wildcards):
    """Params function: instruct models see instructions through their chat template."""
    return bool(model_spec(wildcards.model)["instruct"])


def size_billions(model):
    """Configured parameter count in billions (0 for the demo's trained models)."""
    return (model_spec(model).get("n_params") or 0) / 1e9


def mem_by_size(base_mb, per_billion_mb=3000):
    """Resource function: host memory grows with the model (bf16 weights are loaded on the host first)."""
    return lambda wildcards, attempt: int(base_mb + per_billion_mb * size_billions(wildcards.model))


def runtime_by_size(base_min, per_billion_min):
    """Resource function (minutes): grows with the model, and with each retry (attempt 2 gets twice the time)."""
    return lambda wildcards, attempt: int((base_min + per_billion_min * size_billions(wildcards.model)) * attempt)


def get_gpus(wildcards):
    """Resource function: GPUs for a generation / scoring job."""
    return model_spec(wildcards.model).get("gpus", 0)


def calibration_folder(dataset, model):
    return f"{RD}/calibration/{dataset}/{model}"


def calibration_files(dataset, model):
    """The predictor a model's calibrated samplers need (empty for other models)."""
    if model not in CALIBRATED:
        return {}
    d = calibration_folder(dataset, model)
    return {"calibration": f"{d}/predictor.json", "head": f"{d}/predictor.safetensors"}


def get_generate_calibration(wildcards):
    """Input function (unpacked): the predictor files, for a calibrated sampler setting only."""
    if get_setting(wildcards)["sampler"] in CALIBRATED_SAMPLERS:
        return calibration_files(wildcards.dataset, wildcards.model)
    return {}


def get_score_calibration(wildcards):
    """Input function (unpacked): the predictor files, when any setting of the model needs them."""
    return calibration_files(wildcards.dataset, wildcards.model)


def get_calibrated_samplers(wildcards):
    """Params function: the calibrated samplers run for the model."""
    return sorted({s["sampler"] for s in model_settings(wildcards.model) if s["sampler"] in CALIBRATED_SAMPLERS})


def get_calibration_tables(wildcards):
    return {
        "predictors": [f"{calibration_folder(d, m)}/predictor.json" for d in DATASETS for m in CALIBRATED],
        "tradeoffs": [f"{calibration_folder(d, m)}/tradeoff_tf.csv" for d in DATASETS for m in CALIBRATED],
    }


def generation_jobs():
    """Every (dataset, model, setting dict) of the grid."""
    return [(d, m, s) for d in DATASETS for m in MODELS for s in model_settings(m)]


def generation_path(dataset, model, slug):
    return f"{RD}/generations/{dataset}/{model}/{slug}.parquet"


def score_path(dataset, model):
    return f"{RD}/scores/{dataset}/{model}.parquet"


def aggregate_jobs():
    """Params for the aggregate rule: one dict per generation file with its model metadata."""
    jobs = []
    for d, m, s in generation_jobs():
        spec = model_spec(m)
        jobs.append(
            {
                "model": m,
                "family": spec["family"],
                "n_params": spec.get("n_params"),
                "instruct": spec["instruct"],
                "dataset": d,
                "sampler": s["sampler"],
                "sampler_param": s.get("param"),
                "temperature": float(s["temperature"]),
                "setting": s["slug"],
                "checkpoint_of": CHECKPOINTS[m][0] if m in CHECKPOINTS else None,
                "train_tokens": train_tokens(m),
                "generations": generation_path(d, m, s["slug"]),
                "scores": score_path(d, m),
            }
        )
    return jobs


def get_final_outputs():
    """Targets of `rule all`."""
    return [
        f"{RD}/config.effective.yaml",
        f"{RD}/tables/summary.csv",
        f"{RD}/tables/per_step.parquet",
        f"{RD}/tables/scaling_fits.csv",
        f"{RD}/tables/data_scaling_fits.csv",
        f"{RD}/tables/context_fits.csv",
        *expand(f"{RD}/figures/{{name}}.{{ext}}", name=["tradeoff", "context_length", "data_scaling"],
                ext=["png", "pdf"]),  # fmt: skip
        *expand(f"{RD}/figures/per_step{{smooth}}.{{ext}}", smooth=["", "_smoothed"], ext=["png", "pdf"]),
        *expand(f"{RD}/figures/scaling.{{ext}}", ext=["png", "pdf"]),
        f"{RD}/tables/power_law.csv",
        f"{RD}/tables/singleton_slopes.csv",
        f"{RD}/tables/prop31.csv",
        *expand(f"{RD}/figures/figure1_theory.{{ext}}", ext=["png", "pdf"]),
        f"{RD}/tables/future_entropy_exact.csv",
        *([f"{RD}/tables/mauve_buckets.csv", f"{RD}/mauve/examples.md", f"{RD}/figures/mauve.png"]
          if config["mauve"]["featurizers"] else []),  # fmt: skip
        *expand(f"{RD}/figures/future_entropy_exact.{{ext}}", ext=["png", "pdf"]),
        *([f"{RD}/tables/calibration.csv", f"{RD}/tables/predictor.csv", f"{RD}/figures/calibration_tf.png"]
          if CALIBRATED else []),  # fmt: skip
        f"{RD}/tables/benchmarks.csv",
    ]


def get_dataset_raw(wildcards):
    """Input function: the hub snapshot of an `hf` dataset; nothing for local corpora."""
    if config["datasets"][wildcards.dataset]["source"] == "hf":
        return f"{DL}/datasets/{wildcards.dataset}"
    return []


def get_power_law_inputs(wildcards):
    """Input function: every dataset's documents (docs_<name>) and, where the workflow trains a
    tokenizer, its encoded training stream (ids_<name>) for the token-level exponent."""
    inputs = {f"docs_{d}": f"{RD}/data/{d}/docs.parquet" for d in DATASETS}
    if any(m["source"] == "train" for m in config["models"].values()):
        inputs.update({f"ids_{d}": f"{RD}/data/{d}/train_ids.npy" for d in DATASETS})
    return inputs


def get_excerpt_jobs(wildcards):
    """Params function: the generation files whose excerpts enter MAUVE (base models, not
    checkpoints, at the settings listed in mauve.settings), with the folder of their tokenizer."""
    jobs = []
    for m in config["models"]:
        if config["models"][m]["instruct"]:
            continue
        for s in model_settings(m):
            if s["slug"] in config["mauve"]["settings"]:
                jobs.append({
                    "model": m,
                    "setting": s["slug"],
                    "generations": generation_path(wildcards.dataset, m, s["slug"]),
                    "scores": score_path(wildcards.dataset, m),
                    "model_path": model_folder(m, wildcards.dataset),
                })  # fmt: skip
    return jobs


def get_excerpt_inputs(wildcards):
    """Input function: generation, score and model files behind the excerpts of one dataset."""
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
        return model_folder(spec["model"], wildcards.dataset)
    if spec["source"] == "hf":
        return f"{DL}/featurizers/{wildcards.featurizer}"
    return None


def get_featurizer_folder(wildcards):
    """Input function: the featurizer's folder when a rule produces it."""
    path = get_featurizer_path(wildcards)
    return [path] if path else []


def get_featurizer_gpus(wildcards):
    """Resource function: one GPU for hub featurizers (gpt2-large), none otherwise."""
    return 1 if config["mauve"]["featurizers"][wildcards.featurizer]["source"] == "hf" else 0


def get_mauve_tables(wildcards):
    """Input function: every dataset x featurizer bucket table."""
    return expand(f"{RD}/mauve/{{dataset}}/buckets_{{featurizer}}.csv", dataset=DATASETS,
                  featurizer=list(config["mauve"]["featurizers"]))  # fmt: skip


def intermediate_files():
    """Every intermediate Parquet file of the grid (each with a JSON sidecar; entcal.files)."""
    files = [f"{RD}/data/{d}/{name}.parquet" for d in DATASETS for name in ("docs", "examples", "calibration")]
    files += [f"{RD}/prompts/{d}/{m}.parquet" for d in DATASETS for m in MODELS]
    files += [score_path(d, m) for d in DATASETS for m in MODELS]
    files += [generation_path(d, m, s["slug"]) for d, m, s in generation_jobs()]
    files += [f"{calibration_folder(d, m)}/labels.parquet" for d in DATASETS for m in CALIBRATED]
    return files


def check_intermediate_files():
    """onstart: stop before any job runs (and before Snakemake deletes the outputs it would recompute)
    if an existing intermediate file that this run reads, not writes, is damaged or cut short."""
    from entcal.files import check_existing

    rewritten = [f for job in workflow.dag.needrun_jobs() for f in job.output]
    bad = check_existing(intermediate_files(), skip=rewritten)
    if bad:
        raise WorkflowError("damaged intermediate files; nothing was run or deleted:\n  " + "\n  ".join(bad))
