"""The grid a configuration defines, and where each of its files lives: one place for both.

:class:`Grid` expands a validated configuration into models (checkpoints included), sampler settings
and jobs, and knows every output's path. The rules take their output patterns from
:meth:`Grid.pattern` (``{wildcards}`` left for Snakemake), their input functions the same paths from
:meth:`Grid.path`, and :mod:`entcal.results` reads the files through it, so a path is written once.
Paths are under ``results_dir`` except the hub downloads and converted GGUF models (``downloads_dir``)
and local models.
"""

from __future__ import annotations

from entcal.config import calibrated_models, checkpoint_models, model_new_tokens, setting_slug
from entcal.records import source_key
from entcal.samplers import CALIBRATED

# output templates, relative to results_dir; {wildcards} as the rules name them
TEMPLATES = {
    "docs": "data/{dataset}/docs.parquet",
    "examples": "data/{dataset}/examples.parquet",
    "calibration_windows": "data/{dataset}/calibration.parquet",
    "tokenizer": "tokenizers/{dataset}",
    "train_ids": "data/{dataset}/train_ids.npy",
    "trained_model": "models/{dataset}/{model}",
    "prompts": "prompts/{dataset}/{model}.parquet",
    "generations": "generations/{dataset}/{model}/{setting}.parquet",
    "scores": "scores/{dataset}/{model}.parquet",
    "scores_extra": "scores_extra/{dataset}/{model}.parquet",
    "labels": "calibration/{dataset}/{model}/labels.parquet",
    "predictor": "calibration/{dataset}/{model}/predictor.json",
    "head": "calibration/{dataset}/{model}/predictor.safetensors",
    "tradeoff": "calibration/{dataset}/{model}/tradeoff_tf.csv",
    "head_seed": "calibration/{dataset}/{model}/heads/seed{head_seed}.safetensors",
    "root": "calibration/{dataset}/{model}/root/{search}.parquet",
    "root_point": "calibration/{dataset}/{model}/root/{search}.point.parquet",
    "summary": "tables/summary.csv",
    "missing": "tables/missing.csv",
    "per_step": "tables/per_step.parquet",
    "per_prompt": "tables/per_prompt.parquet",
    "bootstrap": "tables/entce_bootstrap.parquet",
    # the beyond-paper samplers' own tables (PARTS): same columns, made apart from the paper's
    "summary_extra": "tables/summary_extra.csv",
    "missing_extra": "tables/missing_extra.csv",
    "per_step_extra": "tables/per_step_extra.parquet",
    "per_prompt_extra": "tables/per_prompt_extra.parquet",
    "effective_config": "config.effective.yaml",
}

# The paper's own results (Figures 2-5, summary.csv, per_step.parquet, the fits) come from its settings only:
# ancestral sampling at a temperature, on base, instruct and checkpoint models. Every other sampler (truncation,
# Mirostat, the calibrated ones) is beyond the paper: scored, aggregated and plotted apart ("extra"), so that a
# failed or slow extra (a predictor still training) never holds back or blocks a paper result.
PAPER_SAMPLERS = ("ancestral",)
PARTS = ("paper", "extra")


def part_of(setting: dict) -> str:
    """``paper`` for the paper's settings (ancestral sampling), ``extra`` for every other sampler."""
    return "paper" if setting["sampler"] in PAPER_SAMPLERS else "extra"


def part_kind(kind: str, part: str) -> str:
    """The file kind of a part: ``summary`` -> ``summary_extra`` for the extras (scores, tables)."""
    return kind if part == "paper" else f"{kind}_extra"


# hub snapshots and converted GGUF models, relative to downloads_dir (shared by every results_dir); {source} is
# the hash of the entry's source keys (entcal.records.source_key): a folder is keyed by what it holds, not by
# the name alone, so configurations that give one name different files never share or overwrite a folder
DOWNLOAD_TEMPLATES = {
    "model": "models/{model}--{source}",
    "dataset": "datasets/{dataset}--{source}",
    "featurizer": "featurizers/{featurizer}--{source}",
}


def download_folder(config: dict, kind: str, name: str) -> str:
    """The download (or conversion) folder of a model, dataset or featurizer of ``config``."""
    section = {"model": config["models"], "dataset": config["datasets"], "featurizer": config["mauve"]["featurizers"]}
    spec = section[kind][name]
    return f"{config['downloads_dir']}/" + DOWNLOAD_TEMPLATES[kind].format(**{kind: name, "source": source_key(spec)})


class Grid:
    """Models, settings, jobs and paths of a configuration (validated, defaults filled in)."""

    def __init__(self, config: dict):
        self.config = config
        self.rd = config["results_dir"]
        self.dl = config["downloads_dir"]
        self.datasets = list(config["datasets"])
        self.checkpoints = checkpoint_models(config)  # {slug: (trained model, tokens seen)}
        self.models = list(config["models"]) + list(self.checkpoints)
        self.calibrated = calibrated_models(config)  # models a future-entropy predictor is trained for

    # -- paths -----------------------------------------------------------------------------------
    def pattern(self, kind: str, suffix: str | None = None) -> str:
        """The output pattern of a file kind, with its wildcards (``{dataset}``...) left in;
        ``suffix`` swaps the extension (``.json``: a Parquet file's sidecar)."""
        p = f"{self.rd}/{TEMPLATES[kind]}"
        return p.rsplit(".", 1)[0] + suffix if suffix else p

    def path(self, kind: str, suffix: str | None = None, **wildcards) -> str:
        return self.pattern(kind, suffix).format(**wildcards)

    def download_pattern(self, kind: str) -> str:
        """The folder pattern of a hub snapshot (``model``, ``dataset``, ``featurizer``)."""
        return f"{self.dl}/{DOWNLOAD_TEMPLATES[kind]}"

    def download_path(self, kind: str, **wildcards) -> str:
        """A download folder, by name (``model=...``): its ``{source}`` key from the configuration."""
        return download_folder(self.config, kind, wildcards[kind])

    def download_folders(self) -> list[str]:
        """Every download and conversion folder of this configuration (models, datasets, featurizers)."""
        out = [
            self.download_path("model", model=m)
            for m, s in self.config["models"].items()
            if s["source"] in ("hf", "gguf")
        ]
        out += [
            self.download_path("dataset", dataset=d)
            for d, s in self.config["datasets"].items()
            if s.get("source") == "hf"
        ]
        feats = self.config["mauve"]["featurizers"]
        return out + [
            self.download_path("featurizer", featurizer=f) for f, s in feats.items() if s.get("source") == "hf"
        ]

    # -- models ----------------------------------------------------------------------------------
    def model_spec(self, model: str) -> dict:
        """The config entry of a model (a checkpoint shares its trained model's entry)."""
        return self.config["models"][self.checkpoints[model][0] if model in self.checkpoints else model]

    def max_new_tokens(self, model: str) -> int:
        """Tokens a model generates at most (:func:`entcal.config.model_new_tokens`)."""
        return model_new_tokens(self.config, self.model_spec(model))

    def context_rule(self) -> str:
        """``generation.context_rule``: ``authors`` (a short-context model stops at its context) or ``model``."""
        return self.config["generation"].get("context_rule") or "model"

    def model_folder(self, model: str, dataset: str) -> str:
        """The folder that holds the model used on ``dataset``: trained per dataset, downloaded, or
        given (a checkpoint lives inside its trained model's folder)."""
        if model in self.checkpoints:
            return self.path("trained_model", dataset=dataset, model=self.checkpoints[model][0])
        spec = self.config["models"][model]
        if spec["source"] == "train":
            return self.path("trained_model", dataset=dataset, model=model)
        if spec["source"] in ("hf", "gguf"):  # a hub snapshot, or a GGUF file converted once
            return self.download_path("model", model=model)
        return spec["path"]

    def model_path(self, model: str, dataset: str) -> str:
        """The ``save_pretrained`` folder to load (a checkpoint's own subfolder)."""
        folder = self.model_folder(model, dataset)
        if model in self.checkpoints:
            return f"{folder}/checkpoints/tokens_{self.checkpoints[model][1]}"
        return folder

    def train_tokens(self, model: str) -> int | None:
        """Training tokens seen by a trained model or checkpoint (None for hub and local models)."""
        if model in self.checkpoints:
            return self.checkpoints[model][1]
        spec, tr = self.config["models"][model], self.config["training"]
        if spec["source"] != "train":
            return None
        per_step = tr["seq_len"] * tr["batch_size"]
        return spec["train"]["tokens"] // per_step * per_step

    # -- settings and jobs -----------------------------------------------------------------------
    def model_settings(self, model: str, part: str | None = None) -> list[dict]:
        """Sampler settings (dicts with sampler, temperature, param, slug) run for a model, all of them or
        one part's (``paper`` or ``extra``, :func:`part_of`). Checkpoints are sampled at temperature 1 only."""
        if model in self.checkpoints:
            s = {"sampler": "ancestral", "temperature": 1.0}
            settings = [dict(s, slug=setting_slug(s))]
        else:
            kind = "instruct" if self.config["models"][model]["instruct"] else "base"
            settings = [
                dict(s, slug=setting_slug(s))
                for s in self.config["samplers"][kind]
                if model in s.get("models", [model])
            ]
        return [s for s in settings if part is None or part_of(s) == part]

    def models_with(self, part: str) -> list[str]:
        """The models that run at least one setting of ``part``."""
        return [m for m in self.models if self.model_settings(m, part)]

    def scores_path(self, dataset: str, model: str, setting: dict) -> str:
        """The score file that holds a setting's reference log loss (the paper's or the extras')."""
        return self.path(part_kind("scores", part_of(setting)), dataset=dataset, model=model)

    def setting(self, model: str, slug: str) -> dict:
        for s in self.model_settings(model):
            if s["slug"] == slug:
                return s
        raise ValueError(
            f"model {model!r} has no sampler setting {slug!r} (it has "
            f"{[s['slug'] for s in self.model_settings(model)]})"
        )

    def generation_jobs(self, part: str | None = None) -> list[tuple[str, str, dict]]:
        """Every (dataset, model, setting dict) of the grid, or of one part."""
        return [(d, m, s) for d in self.datasets for m in self.models for s in self.model_settings(m, part)]

    def aggregate_jobs(self, part: str | None = None) -> list[dict]:
        """One dict per generation file with its model metadata (the aggregate rules' params): all of them,
        or one part's (``paper``: the aggregate rule; ``extra``: aggregate_extra)."""
        jobs = []
        for d, m, s in self.generation_jobs(part):
            spec = self.model_spec(m)
            jobs.append(
                {
                    "model": m,
                    "family": spec["family"],
                    "n_params": spec.get("n_params"),
                    "n_params_nominal": spec.get("nominal_params"),
                    "instruct": spec["instruct"],
                    "dataset": d,
                    "sampler": s["sampler"],
                    "sampler_param": s.get("param"),
                    "temperature": float(s["temperature"]),
                    "setting": s["slug"],
                    "checkpoint_of": self.checkpoints[m][0] if m in self.checkpoints else None,
                    "train_tokens": self.train_tokens(m),
                    "generations": self.path("generations", dataset=d, model=m, setting=s["slug"]),
                    "scores": self.scores_path(d, m, s),
                    "part": part_of(s),
                }
            )
        return jobs

    def calibration_files(self, dataset: str, model: str) -> dict:
        """The predictor files a model's calibrated samplers need (empty for other models)."""
        if model not in self.calibrated:
            return {}
        return {
            "calibration": self.path("predictor", dataset=dataset, model=model),
            "head": self.path("head", dataset=dataset, model=model),
        }

    def head_seeds(self) -> list[int]:
        """The seeds of the root searches' heads: ``seed``, ``seed`` + 1, ... (``calibration.root.head_seeds``)."""
        root = self.config["calibration"].get("root") or {}
        return [self.config["seed"] + k for k in range(root.get("head_seeds", 3))] if root.get("methods") else []

    def root_searches(self) -> list[str]:
        """The searches of every calibrated model x dataset (``calibration.root``): ``ancestral``, and
        ``future_entropy-s{seed}`` once per head seed."""
        methods = (self.config["calibration"].get("root") or {}).get("methods") or {}
        out = ["ancestral"] if "ancestral" in methods else []
        return out + [f"future_entropy-s{s}" for s in self.head_seeds() if "future_entropy" in methods]

    def search_inputs(self, dataset: str, model: str, search: str) -> dict:
        """The head a search's tilt uses (its seed's head and JSON; none for temperature)."""
        if not search.startswith("future_entropy-s"):
            return {}
        head = self.path("head_seed", dataset=dataset, model=model, head_seed=search.rsplit("-s", 1)[1])
        return {"head": head, "calibration": head.rsplit(".", 1)[0] + ".json"}

    def root_files(self) -> dict:
        """Every search's step table and calibrated point (the calibration_table job's inputs)."""
        jobs = [(d, m, s) for d in self.datasets for m in self.calibrated for s in self.root_searches()]
        return {
            "roots": [self.path("root", dataset=d, model=m, search=s) for d, m, s in jobs],
            "points": [self.path("root_point", dataset=d, model=m, search=s) for d, m, s in jobs],
        }

    def calibrated_samplers(self, model: str) -> list[str]:
        return sorted({s["sampler"] for s in self.model_settings(model) if s["sampler"] in CALIBRATED})

    def intermediate_files(self) -> list[str]:
        """Every intermediate Parquet file of the grid (each with a JSON sidecar; :mod:`entcal.files`)."""
        d_, m_ = self.datasets, self.models
        files = [self.path(k, dataset=d) for d in d_ for k in ("docs", "examples", "calibration_windows")]
        files += [self.path("prompts", dataset=d, model=m) for d in d_ for m in m_]
        files += [
            self.path(part_kind("scores", p), dataset=d, model=m)
            for p in PARTS
            for d in d_
            for m in self.models_with(p)
        ]
        files += [self.path("generations", dataset=d, model=m, setting=s["slug"]) for d, m, s in self.generation_jobs()]
        files += [self.path("labels", dataset=d, model=m) for d in d_ for m in self.calibrated]
        return files

    def excerpt_jobs(self, dataset: str, part: str) -> list[dict]:
        """The generation files of one part (`paper` or `extra`) whose excerpts enter MAUVE (base models, and
        instruct models with mauve.instruct; not checkpoints; at the settings listed in mauve.settings), with their
        score file and the folder of their tokenizer; sorted, so the models' order in the file changes nothing."""
        mauve, models = self.config["mauve"], self.config["models"]
        jobs = [
            {
                "model": m,
                "setting": s["slug"],
                "generations": self.path("generations", dataset=dataset, model=m, setting=s["slug"]),
                "scores": self.scores_path(dataset, m, s),
                "model_path": self.model_folder(m, dataset),
            }
            for m in models
            if mauve["instruct"] or not models[m]["instruct"]
            for s in self.model_settings(m, part)
            if s["slug"] in mauve["settings"]
        ]
        return sorted(jobs, key=lambda j: (j["model"], j["setting"]))

    def mauve_parts(self) -> list[str]:
        """The parts with MAUVE excerpts: the paper's, and `extra` where mauve.settings names a setting beyond it."""
        return [p for p in PARTS if any(self.excerpt_jobs(d, p) for d in self.datasets)]

    def final_rules(self) -> dict:
        """{rule: wildcard values to expand}: the rules whose outputs the default target asks for (rules/common.smk
        expands their output blocks, so paths stay written once). The paper's outputs, then the extras' (the
        samplers beyond the paper) where the configuration runs any. A new figure is a new rule plus its name here."""
        extra = bool(self.aggregate_jobs("extra"))
        mauve = bool(self.config["mauve"]["featurizers"])
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
            **({"mauve_summary_extra": {}} if mauve and "extra" in self.mauve_parts() else {}),
            **({"calibration_table": {}, "plot_calibration": {}} if self.calibrated else {}),
        }
