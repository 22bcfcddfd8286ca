# Configuration checks, wildcard constraints and input functions. The grid's expansion and every output
# path come from entcal.grid.Grid (rules take their output patterns from GRID.pattern, input functions the
# same paths from GRID.path). Input functions do no I/O, import no torch and touch no network.

import functools
import os
import re
import sys

import yaml
from snakemake.common.tbdstring import TBDString
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# this workflow's own folder: the Snakefile's, also where another workflow uses it as a module (workflow.basedir is
# then the using workflow's folder); its own copy of the entcal package comes first
WORKFLOW_DIR = os.path.dirname(str(workflow.current_basedir))
if not os.path.isfile(os.path.join(WORKFLOW_DIR, "Snakefile")):
    raise WorkflowError(
        f"this workflow was loaded from {workflow.current_basedir}, not from a folder on this machine: use it as a "
        "module from a local clone (git clone, then `module ...: snakefile: '<clone>/Snakefile'`; docs/deploy.md)"
    )
sys.path.insert(0, f"{WORKFLOW_DIR}/workflow_scripts")
from entcal.fingerprint import stage_fingerprints  # noqa: E402
from entcal.provenance import provenance  # noqa: E402
from entcal.config import (
    SETTING_PATTERN,
    apply_revision_lock,
    canonical,
    check_config,
    duplicate_keys,
    exclude_models,
    resolve_fidelity,
    results_config,
    schema_errors,
    yaml_bounds,
    yte_templates,
)  # noqa: E402
from entcal.samplers import CALIBRATED as SAMPLERS_CALIBRATED  # noqa: E402
from entcal.grid import Grid  # noqa: E402
from entcal.gguf import gguf_problems  # noqa: E402
from entcal.profile import conda_problem, job_venv_problem, site_facts  # noqa: E402
from entcal.runtime import job_environment  # noqa: E402
from entcal.logs import progress_problems  # noqa: E402
from entcal.memory import ModelShape, cpu_job_mb, gpus_needed  # noqa: E402

# Each stage's code fingerprint (entcal.fingerprint): rules pass their adapter's as params.code, so a change
# to the code a stage runs reruns exactly that stage and what follows; touch or checkout reruns nothing
# (the workflow profile leaves Snakemake's script-mtime `code` trigger out of rerun-triggers).
CODE = stage_fingerprints(f"{WORKFLOW_DIR}/workflow_scripts")

# the files the configuration came from: --configfile, else the configfile: of the Snakefile (this one's, or the
# one of a workflow that uses this one as a module)
CONFIG_FILES = (
    list(workflow.overwrite_configfiles) or list(workflow.configfiles) or [f"{WORKFLOW_DIR}/config/config.yaml"]
)
for _f in yte_templates(CONFIG_FILES):
    logger.warning(
        f"{_f} is a YTE template (__use_yte__: true): Snakemake ran the Python code in it while loading it, "
        "before this workflow could read it. A configuration file is code to Snakemake: use only ones you "
        "trust (docs/reliability.md)."
    )
_problems = [p for f in CONFIG_FILES for p in yaml_bounds(f)]
if _problems:  # before anything walks the document
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_problems))
_problems = [p for f in CONFIG_FILES for p in duplicate_keys(f)]
if not config.get("results_dir"):
    _problems.append(
        f"{', '.join(map(str, CONFIG_FILES))}: no results_dir. A configuration given with --configfile "
        "replaces the paper grid (it is the default only without --configfile) and names its own results "
        "folder, e.g. results_dir: results/mine"
    )
_problems += [
    e
    for e in schema_errors(config, yaml.safe_load(open(f"{WORKFLOW_DIR}/config/schema.yaml")))
    if "'results_dir' is a required property" not in e
]
if _problems:
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_problems))
validate(config, "../config/schema.yaml", set_default=True)
# the fidelity preset fills every sub-switch left null (entcal.config.FIDELITY); config.effective.yaml records them
_resolved = resolve_fidelity(config)
for _key, (_value, _how) in _resolved.items():
    if _how == "configured":
        logger.info(f"{_key}: {_value} (set in the configuration, over the {config['fidelity']} preset)")
logger.info(
    f"fidelity {config['fidelity']}: "
    + ", ".join(f"{k} {v}" for k, (v, _) in _resolved.items())
    + " (config.effective.yaml records them)"
)
if config["revisions_lock"]:
    for note in apply_revision_lock(config, yaml.safe_load(open(config["revisions_lock"])) or {}):
        logger.warning(note)
exclude_models(config)
check_config(config)
if _why := conda_problem(workflow.deployment_settings.deployment_method):
    raise WorkflowError(_why)
if _problems := progress_problems():
    raise WorkflowError("invalid environment:\n  " + "\n  ".join(_problems))
# site facts from the site profile's default-resources (entcal.profile.SITE_FACTS), which a --config on the
# command line cannot replace; they override the configuration's values of the same keys
for _key, _value in site_facts(workflow.resource_settings.default_resources).items():
    if config.get(_key) != _value:
        logger.info(
            f"{_key}: {_value} (the site profile's default-resources; the configuration said {config.get(_key)})"
        )
    config[_key] = _value
# canonical key order (entcal.config.canonical): an equivalent configuration in another key order gives the
# same params, so it reruns nothing; the order of datasets and models is kept (figure panels and legends)
_canonical = canonical(config, keep=("datasets", "models"))
config.clear()
config.update(_canonical)

GRID = Grid(config)
_missing = gguf_problems(config)
if _missing:
    raise WorkflowError("real models not installed:\n  " + "\n  ".join(_missing))
RD = GRID.rd
DATASETS, MODELS, CHECKPOINTS, CALIBRATED = GRID.datasets, GRID.models, GRID.checkpoints, GRID.calibrated
PROVENANCE = provenance(canonical(results_config(config)), CODE)  # what dump_config records (entcal.provenance)
P = GRID.pattern  # output patterns: P("generations") = "{results_dir}/generations/{dataset}/{model}/{setting}.parquet"

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


def gguf_convert_mem_mb(wildcards, attempt):
    """Resource function: a GGUF conversion holds the file, the float32 weights and their saved copy."""
    return int((2000 + 3 * 4 * GRID.model_spec(wildcards.model)["n_params"] / 1e6) * retry_growth(attempt))


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
    return sel


def get_sampling(wildcards):
    """Params function: the generation length (the model's own max_new_tokens, if it has one) and stopping."""
    return {"max_new_tokens": GRID.max_new_tokens(wildcards.model), "stop_at_eos": config["generation"]["stop_at_eos"]}


def get_chat_instruction(wildcards):
    """Params function: the user turn an instruct model's chat template wraps around a window of a corpus
    without instructions (None for base models, or where the dataset names none)."""
    return config["datasets"][wildcards.dataset].get("chat_instruction") if get_chat(wildcards) else None


def get_chat(wildcards):
    """Params function: instruct models see instructions through their chat template."""
    return bool(GRID.model_spec(wildcards.model)["instruct"])


def size_billions(model):
    """Configured parameter count in billions (0 for the demo's trained models)."""
    return (GRID.model_spec(model).get("n_params") or 0) / 1e9


def retry_growth(attempt):
    """A retried job asks for half as much again per attempt (an OOM-killed or timed-out job was too small)."""
    return 1 + 0.5 * (attempt - 1)


def mem_by_size(base_mb, per_billion_mb=3000):
    """Resource function: host memory grows with the model (bf16 weights are loaded on the host first)
    and on each retry."""
    return lambda wildcards, attempt: int(
        (base_mb + per_billion_mb * size_billions(wildcards.model)) * retry_growth(attempt)
    )


def mem_by_plan(kind, base_mb, per_billion_mb=3000):
    """Resource function (generation and scoring): on CPU the memory plan of the model's config.json
    (entcal.memory.cpu_job_mb; evaluated when the model folder exists, so a model the workflow trains
    or converts is planned from its real config), at the configured batch; on GPUs the host memory that
    loading needs (mem_by_size). Grows on each retry."""
    by_size = mem_by_size(base_mb, per_billion_mb)

    def mem(wildcards, input, attempt):
        if config["device"] != "cpu":
            return by_size(wildcards, attempt)
        g = config["generation"]
        batch = g["batch_size"] if kind == "generate" else config["scoring"]["batch_size"]
        if batch == "auto":
            return by_size(wildcards, attempt)
        spec = GRID.model_spec(wildcards.model)
        dtype = spec.get("dtype") or config["dtype"]
        if not os.path.isfile(os.path.join(get_model_path(wildcards), "config.json")):
            return TBDString()  # a dry run: the model is not trained, downloaded or converted yet
        shape = ModelShape.from_dir(get_model_path(wildcards))
        prompt = g["prompt_tokens"] + 64  # room for special tokens and an instruct model's chat template
        n = min(int(batch), spec.get("n_prompts") or g["n_prompts"])
        # auto resolves on the machine that runs the job: plan for the larger of its two outcomes
        plan = max(
            cpu_job_mb(shape, kind, n, prompt + GRID.max_new_tokens(wildcards.model), prompt_len=prompt, dtype=d)
            for d in (["float32", "bfloat16"] if dtype == "auto" else [dtype])
        )
        return int(plan * retry_growth(attempt))

    return mem


def runtime_by_size(base_min, per_billion_min):
    """Resource function (minutes): grows with the model and on each retry, never past the site's
    longest runtime (max_runtime_min)."""
    return lambda wildcards, attempt: min(
        config["max_runtime_min"],
        int((base_min + per_billion_min * size_billions(wildcards.model)) * retry_growth(attempt)),
    )


@functools.cache
def plan_shapes():
    """Model shapes for the cost plan: a downloaded model's config.json, else config/model_shapes.yaml."""
    from entcal.plan import load_shapes

    return load_shapes(config, f"{WORKFLOW_DIR}/config/model_shapes.yaml")


@functools.cache
def planned_seconds(model, dataset):
    """entcal.plan.model_costs of a hub or local model x dataset on GPUs (seconds per job), None where the
    plan does not apply (CPU runs, trained models and checkpoints, a model without a known shape)."""
    from entcal.plan import GPUSpec, model_costs

    spec = config["models"].get(model)
    if config["device"] == "cpu" or not spec or spec["source"] == "train" or model not in plan_shapes():
        return None
    return model_costs(config, model, plan_shapes()[model], dataset, GPUSpec())["seconds"]


def check_gpus():
    """Parse time, on a workstation whose profile declares its GPUs (resources: gpu, profiles/local): every model
    whose jobs need more GPUs than that is named with the fix, before Snakemake stops at its first such job."""
    from entcal.plan import gpu_shortfall

    have = workflow.global_resources.get("gpu")
    have = getattr(have, "value", have)
    if config["device"] == "cpu" or not isinstance(have, int) or workflow.remote_exec:
        return
    if problems := gpu_shortfall(config, plan_shapes(), have):
        raise WorkflowError(f"this machine has {have} GPUs (resources: gpu):\n  " + "\n  ".join(problems))


def check_contexts():
    """Parse time: every model whose context (its config.json, or config/model_shapes.yaml before the download)
    cannot hold the prompt plus its generation stops the run, naming the model and the fix (entcal.plan)."""
    from entcal.plan import context_problems

    problems = context_problems(config, plan_shapes())
    if problems:
        raise WorkflowError("invalid configuration:\n  " + "\n  ".join(problems))


def runtime_by_plan(kind, base_min, per_billion_min):
    """Resource function (minutes) of the GPU jobs: the cost plan's time of this job (entcal.plan.model_costs:
    every pass it runs, a vLLM engine's start, the NF4 entropy pass under precision: paper and the lookahead's
    candidates included) times
    entcal.plan.RUNTIME_MARGIN, at least RUNTIME_FLOOR_MIN; where the plan does not apply, runtime_by_size.
    Grows on each retry, never past the site's longest runtime (max_runtime_min)."""
    by_size = runtime_by_size(base_min, per_billion_min)

    def runtime(wildcards, attempt):
        from entcal.plan import runtime_minutes

        sec = planned_seconds(wildcards.model, wildcards.dataset)
        if sec is None:
            return by_size(wildcards, attempt)
        s = sec[kind][wildcards.setting] if kind == "generate" else sec[kind]
        return min(config["max_runtime_min"], int(runtime_minutes(s) * retry_growth(attempt)))

    return runtime


# GPU rules' site resources: the GPU partition and model, when the site profile names them
# (otherwise the profile's default partition, and any GPU model)
GPU_SITE = {k: config[c] for k, c in (("slurm_partition", "gpu_partition"), ("gpu_model", "gpu_model")) if config[c]}


def config_subset(section, keys):
    """Params: only these keys of a config section, the ones that change a rule's results (a change to
    any other key, such as a batch or shard size, reruns nothing)."""
    return {k: config[section][k] for k in keys}


def get_gpus(wildcards, input):
    """Resource function: GPUs for a model job. The model entry's ``gpus``; without one, none on a CPU
    configuration (device: cpu) and otherwise the fewest GPUs on which the memory plan of the model's
    config.json fits (entcal.memory.gpus_needed; evaluated once the model folder exists), so that no hub
    model becomes a CPU job by omission."""
    spec = GRID.model_spec(wildcards.model)
    if "gpus" in spec:
        return spec["gpus"]
    if config["device"] == "cpu":
        return 0
    if not os.path.isfile(os.path.join(get_model_path(wildcards), "config.json")):
        return TBDString()  # a dry run: the model is not downloaded yet
    g = config["generation"]
    shape = ModelShape.from_dir(get_model_path(wildcards))
    return gpus_needed(
        shape,
        config["gpu_memory_gb"],
        g["prompt_tokens"] + 64 + GRID.max_new_tokens(wildcards.model),
        quantization="nf4" if config["precision"] == "paper" else "none",
    )


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


# The targets of `rule all` are every output of these rules, with the wildcard values to expand where a
# rule has wildcards. Paths stay written once, in the rules' own output blocks.
def final_rules():
    """{rule: wildcard values to expand}: the rules whose outputs `rule all` asks for. The paper's outputs,
    then the extras' (the samplers beyond the paper, entcal.grid.part_of) where the configuration runs any."""
    extra = bool(GRID.aggregate_jobs("extra"))
    mauve = bool(config["mauve"]["featurizers"])
    return {
        "dump_config": {},
        "aggregate": {},
        "scaling_fits": {},
        "context_fits": {},
        "plot_per_step": {"smooth": ["", "_smoothed"]},
        "plot_scaling": {},
        "plot_tradeoff": {},
        "plot_context": {},
        "plot_data_scaling": {},
        "power_law": {},
        "singleton_mass": {},
        "plot_theory": {},
        "future_entropy_exact": {},
        "plot_future_entropy_exact": {},
        **({"mauve_summary": {}} if mauve else {}),
        **({"aggregate_extra": {}, "plot_tradeoff_extra": {}} if extra else {}),
        **({"mauve_summary_extra": {}} if mauve and "extra" in mauve_parts() else {}),
        **({"calibration_table": {}, "plot_calibration": {}} if CALIBRATED else {}),
    }


def get_final_outputs(benchmarks=True):
    """The files the default target asks for (with ``benchmarks=False``, the inputs of
    benchmark_table, which collects the benchmark records once everything else is done). Call it
    once all rules are defined (in the Snakefile's last rule, or lazily as an input function)."""
    final = final_rules()
    names = [*final, *(["benchmark_table"] if benchmarks else [])]
    return [f for name in names for f in expand(list(getattr(rules, name).output), **final.get(name, {}))]


def get_final_targets(wildcards):
    """Input function of the default target (all): every final output. It runs once the DAG is built, after a workflow that uses this
    one as a module has been read, and stops where that workflow does not hand its onstart, onsuccess and onerror on
    to this one's (Snakemake runs only the using workflow's hooks; docs/deploy.md)."""
    if missing := [h for h in ("onstart", "onsuccess", "onerror") if h not in workflow.globals]:
        raise WorkflowError(
            f"{workflow.main_snakefile} uses this workflow as a module but defines no {', '.join(missing)}: "
            "without them no run locks its results folder, checks its inputs' records or records its provenance. "
            "Add these lines after the line that imports its rules (use rule * from <module>)\n"
            + "\n".join(f"{h}:\n    <module>.{h}()" for h in ("onstart", "onsuccess", "onerror"))
            + "\n(docs/deploy.md)"
        )
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
    return excerpt_jobs(wildcards.dataset, wildcards.part)


def excerpt_jobs(d, part):
    """The generation files of one part (`paper` or `extra`, entcal.grid.part_of) whose excerpts enter MAUVE
    (base models, and instruct models with mauve.instruct; not checkpoints; at the settings listed in
    mauve.settings), with their score file and the folder of their tokenizer."""
    return sorted(
        [
            {
                "model": m,
                "setting": s["slug"],
                "generations": GRID.path("generations", dataset=d, model=m, setting=s["slug"]),
                "scores": GRID.scores_path(d, m, s),
                "model_path": GRID.model_folder(m, d),
            }
            for m in config["models"]
            if config["mauve"]["instruct"] or not config["models"][m]["instruct"]
            for s in GRID.model_settings(m, part)
            if s["slug"] in config["mauve"]["settings"]
        ],
        key=lambda j: (j["model"], j["setting"]),
    )  # sorted: the models' order in the file changes nothing


def mauve_parts():
    """The parts with MAUVE excerpts: the paper's, and `extra` where mauve.settings names a setting beyond it."""
    return [p for p in ("paper", "extra") if any(excerpt_jobs(d, p) for d in DATASETS)]


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


def get_featurizer_gpus(wildcards):
    """Resource function: one GPU for hub featurizers (gpt2-large), none otherwise."""
    return 1 if config["mauve"]["featurizers"][wildcards.featurizer]["source"] == "hf" else 0


def get_mauve_tables(part):
    """Input function: every dataset x featurizer bucket table of one part."""
    return lambda wildcards: expand(
        rules.mauve_buckets.output.table, part=part, dataset=DATASETS, featurizer=list(config["mauve"]["featurizers"])
    )


def lock_results_dir():
    """onstart: one run at a time on a results folder, whichever checkout it comes from (entcal.files)."""
    from entcal.files import ResultsLockedError, lock_results_dir as _lock

    try:
        _lock(RD, owner=WORKFLOW_DIR)
    except ResultsLockedError as err:
        raise WorkflowError(str(err)) from None


_TERMINATED = []  # times this run received SIGTERM (scancel, a time limit, kill)


def watch_sigterm():
    """onstart: note a SIGTERM, then hand it to Snakemake's own handler (which lets running jobs finish and
    starts no new one), so that on_error can say what happened: Snakemake itself only says that "at least
    one job did not complete"."""
    import signal
    import time

    prev = signal.getsignal(signal.SIGTERM)

    def note(signum, frame):
        _TERMINATED.append(time.time())
        if callable(prev):
            prev(signum, frame)
        else:
            signal.signal(signal.SIGTERM, prev)
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        signal.signal(signal.SIGTERM, note)
    except ValueError:  # not the main thread (Snakemake's GUI): Snakemake's message stands
        pass


def on_error():
    """onerror: after a SIGTERM, say that no job failed and how to resume, before Snakemake's own line."""
    if _TERMINATED:
        logger.error(
            "Stopped by SIGTERM (scancel, a time limit or kill): no job failed. Every finished job's outputs are kept "
            "(Snakemake lets the jobs running here finish first; a job cut off elsewhere keeps its finished shards in "
            "{output}.shards/). Resume with the same snakemake command: only what is missing runs, from the last shard."
        )


_RERUN_RULES = set()  # the rules that carry a rerun flag (RERUN below), filled as the rules are defined


def RERUN(rule):
    """Input of the rules with a code fingerprint, and of dump_config. It is their rerun flag (entcal.provenance),
    kept at time 0 and rewritten, with the reasons, where Snakemake has no record of results made with other
    settings or code, so that those jobs and what follows run again. Created here at parse time when missing."""

    from entcal.provenance import rerun_flag

    _RERUN_RULES.add(rule)
    return str(rerun_flag(RD, rule))


# Downloads carry a rerun flag only for entcal.records (a folder not what its job wrote is redone); a changed setting
# or code never redoes them: their folders are keyed by their source (entcal.grid) and checked by content.
DOWNLOAD_RULES = {"download_model", "download_dataset", "download_featurizer"}


def rule_scripts():
    """The stem of the adapter script (the code fingerprint's key) of every rule with a rerun flag, by rule name;
    score_extra, made from score by `use`, runs score.py."""
    out = {}
    for r in _RERUN_RULES - DOWNLOAD_RULES:
        script = getattr(rules, r).rule.script  # the rule by this workflow's own name (also as a module)
        out[r] = os.path.splitext(os.path.basename(script))[0] if script else r
    return out


def check_provenance():
    """After the rules are defined (Snakefile): where Snakemake has no record of this results folder (a deleted
    .snakemake, a fresh clone, a moved or copied folder), compare the recorded configuration and code with the
    current ones and raise the rerun flags of the stages that changed, saying which and why."""
    from entcal.provenance import ensure_flags, raise_flags, stale_stages, unrecorded_results

    if not workflow.is_main_process:
        return
    ensure_flags(RD, _RERUN_RULES)
    if unrecorded_results(os.getcwd(), RD) and not _cli_forced({"dump_config", os.path.join(RD, "provenance.json")}):
        raise WorkflowError(_no_provenance_message() + ".")
    try:
        stale, checked = stale_stages(os.getcwd(), RD, PROVENANCE, rule_scripts())
    except ValueError as err:
        raise WorkflowError(str(err)) from None
    if stale:
        stale["dump_config"] = ["records the configuration and code of the rerun"]
        raise_flags(RD, stale)
        logger.warning(
            f"{RD} holds results that Snakemake has no record of (no .snakemake metadata for them here: a deleted "
            ".snakemake, a fresh clone or a moved or copied results folder), and they were made with other settings "
            "or code than now. These stages (and what follows from them) run again:\n"
            + "\n".join(
                f"  {r}: " + "; ".join(v[:4]) + (f"; and {len(v) - 4} more" if len(v) > 4 else "")
                for r, v in sorted(stale.items())
            )
            + f"\n(the reasons are kept in {RD}/provenance/rerun/<rule>)"
        )
    elif checked:
        logger.info(
            f"{RD}: no Snakemake record here, but its provenance.json matches this configuration and code: kept"
        )


_DAMAGED = {}  # outputs whose content is not what their job wrote (check_records), refused at onstart


def _cli_forced(names) -> bool:
    """Whether the command line asks for --forceall (-F), or --forcerun (-R) with one of ``names``: read from the
    main process's arguments, because Snakemake fills in its DAG settings only after the Snakefile is read."""
    args = sys.argv[1:]
    if "-F" in args or "--forceall" in args:
        return True
    values, taking = [], False
    for a in args:
        if a in ("-R", "--forcerun"):
            taking = True
        elif a.startswith("--forcerun="):
            values.append(a.split("=", 1)[1])
        elif a.startswith("-"):
            taking = False
        elif taking:
            values.append(a)
    want = set(names) | {os.path.abspath(n) for n in names}
    return any(v in want or os.path.abspath(v) in want for v in values)


def _no_provenance_message():
    from entcal.provenance import unrecorded_results

    found = ", ".join(map(str, unrecorded_results(os.getcwd(), RD)))
    return (
        f"{RD}/provenance.json is missing, but {RD} holds results ({found}, ...): without it the configuration and "
        "code they were made with are unknown, so none of them can be taken as current. Restore provenance.json "
        "(from a backup, or from the folder you copied these results from), or rerun everything (add --forceall), "
        "or, if you know these results match this configuration and code, record them as they are (add "
        "--forcerun dump_config)"
    )


def check_records():
    """After check_provenance (Snakefile): every recorded output of this run's folders (results_dir, the downloads)
    is compared with its record (entcal.records). Outputs made from an input whose content changed since are made
    stale, so their jobs and what follows run again, and the log says which and why; outputs whose own content
    changed (cut short, edited, a weight file rewritten in place) are named now, and their jobs are put in the DAG too
    (so that onstart runs): onstart refuses them, before any job runs or anything is deleted, unless the command asks
    for them to be redone (--forcerun with the file or its rule, --forceall)."""
    from entcal.provenance import rerun_flag
    from entcal.records import from_the_future, mark_stale, survey

    if not workflow.is_main_process:
        return
    if ahead := from_the_future([RD], GRID.download_folders()):
        import time

        raise WorkflowError(
            f"{len(ahead)} results have a modification time in the future (this machine's clock says "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}):\n"
            + "\n".join(f"  {p}: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t))}" for p, t in ahead[:10])
            + "\nSnakemake would take this for clock skew, delete finished outputs and rerun the same jobs on every "
            "run. The clock of the machine that wrote them was ahead, or they were touched with a future date: fix "
            "that clock (NTP), or set their times to now (touch -c <file>; for a folder, its .snakemake_timestamp); "
            "nothing was run or deleted."
        )
    damaged, stale = survey([RD], GRID.download_folders())
    for out, (rule, reasons) in {
        **stale,
        **damaged,
    }.items():  # a damaged one too: its job is in the DAG, onstart decides
        mark_stale(out, rerun_flag(RD, rule) if rule in _RERUN_RULES else None, reasons)
    if stale:
        logger.warning(
            f"{len(stale)} results were made from inputs whose content changed since (entcal.records); their jobs and "
            "what follows run again:\n"
            + "\n".join(f"  {out} ({rule}): " + "; ".join(reasons) for out, (rule, reasons) in sorted(stale.items()))
        )
    _DAMAGED.update(damaged)
    if damaged:
        logger.warning(
            f"{len(damaged)} results are not what their jobs wrote; the run stops before any job unless you ask for "
            "each to be redone (--forcerun <file> or <rule>):\n"
            + "\n".join(f"  {out}: " + "; ".join(reasons) for out, (rule, reasons) in sorted(damaged.items()))
        )


def aggregate_finished():
    """onerror: where jobs failed (with --keep-going the rest ran), for each part (the paper's settings, the
    extras) whose tables could not be made, the tables of every setting whose generation and scores are there,
    and tables/missing.csv (missing_extra.csv) naming the others, the rule that failed and its log. The next
    run remakes the tables by the rules once the missing jobs succeed (their files are newer)."""
    from entcal.aggregate import aggregate, split_finished
    from entcal.grid import PARTS, part_kind
    from entcal.records import digest, write_record

    if _TERMINATED:
        return
    logs = {
        r: str(getattr(rules, r).log[0]).replace("{{", "{").replace("}}", "}")
        for r in ("generate", "score", "score_extra")
        if hasattr(rules, r)
    }
    for part in PARTS:
        jobs = GRID.aggregate_jobs(part)
        done, missing = split_finished(jobs, logs)
        if missing.empty or not done:
            continue
        out = {k: GRID.path(part_kind(k, part)) for k in ("summary", "per_step", "per_prompt", "missing")}
        try:
            aggregate(
                done,
                per_step_out=out["per_step"],
                summary_out=out["summary"],
                max_len=config["analysis"]["max_len"],
                per_prompt_out=out["per_prompt"],
                missing_out=out["missing"],
                missing=missing,
                reference_start=config["analysis"]["reference_start"],
                fidelity=config["fidelity"],
                n_boot=config["analysis"]["n_boot"],
                seed=config["seed"],
                estimator=config["analysis"]["estimator"],
            )
        except Exception as err:  # a damaged file among the finished ones: its own message, nothing written over
            logger.error(f"tables of the finished jobs not written: {err}")
            continue
        # their records, as the rule's job would write them (entcal.records): made from the finished files only
        made = {p: digest(p)[0] for job in done for p in (job["generations"], job["scores"])}
        for path in out.values():
            write_record(path, "aggregate" if part == "paper" else "aggregate_extra", made)
        what = "the paper's" if part == "paper" else "the extra (beyond-paper)"
        logger.error(
            f"{len(missing)} of {len(jobs)} of {what} generation settings are missing (failed jobs, or jobs after "
            f"them): {out['summary']}, {os.path.basename(out['per_step'])} and {os.path.basename(out['per_prompt'])} "
            f"hold the other {len(done)}, and {out['missing']} lists the missing ones with the rule that failed and "
            "its log. Fix the cause and run the same command again: the missing jobs run and the tables are remade "
            "by their rules."
        )


def write_provenance_marker():
    """onsuccess / onerror: this working directory's Snakemake records now cover the results folder."""
    from entcal.provenance import write_marker

    write_marker(os.getcwd(), RD)


def check_job_environment():
    """onstart (Snakemake sets the precommand after the Snakefile is read): the job environment that the site profile's
    precommand activates (sites without conda) can run the jobs, before any is submitted (entcal.profile)."""
    if _why := job_venv_problem(getattr(workflow.remote_execution_settings, "precommand", None)):
        raise WorkflowError(_why)


def check_intermediate_files():
    """onstart: stop before any job runs (and before Snakemake deletes the outputs it would recompute) if an
    existing intermediate file that this run reads, not writes, is damaged or cut short (its sidecar), or if a
    result is not what its job wrote (its record, check_records) and the command did not ask for it again."""
    from entcal.files import check_existing
    from entcal.records import redo

    settings = workflow.dag_settings
    asked = {os.path.abspath(f) for f in settings.forcerun} | set(settings.forcerun)  # files and rules
    refused = {
        str(out): (rule, reasons)
        for out, (rule, reasons) in sorted(_DAMAGED.items())
        if not (settings.forceall or str(out) in asked or asked & {rule})
    }
    rewritten = [f for job in workflow.dag.needrun_jobs() for f in job.output if os.path.abspath(f) not in refused]
    bad = check_existing(GRID.intermediate_files(), skip=rewritten)
    said = "\n".join(bad)
    bad += [
        f"{out}: {'; '.join(reasons)}. To {redo(out)} (that job and what follows run again)"
        for out, (rule, reasons) in refused.items()
        if f"{out}:" not in said
    ]
    if bad:
        raise WorkflowError("damaged intermediate files; nothing was run or deleted:\n  " + "\n  ".join(bad))
