"""What each job asks its scheduler for: memory, runtime and GPUs, as Snakemake resource functions of the wildcards,
the job's input and its attempt. Planned from the model (its ``config.json`` once it exists, entcal.memory; the cost
plan, entcal.plan), growing on each retry, never past the site's longest runtime. ``rules/common.smk`` makes one
:class:`ResourcePlan` and hands its methods to the rules."""

from __future__ import annotations

import functools
import os

from snakemake.common.tbdstring import TBDString

from entcal.memory import ModelShape, cpu_job_mb, gpus_needed
from entcal.plan import model_costs, runtime_minutes
from entcal.model_shapes import load_shapes
from entcal.roofline import GPUSpec


def retry_growth(attempt: int) -> float:
    """A retried job asks for half as much again per attempt (an OOM-killed or timed-out job was too small)."""
    return 1 + 0.5 * (attempt - 1)


class ResourcePlan:
    """The resource functions of one configuration (``config``, after the workflow's checks), its grid
    (entcal.grid.Grid) and the model shapes file of the cost plan (config/model_shapes.yaml)."""

    def __init__(self, config: dict, grid, shapes_file: str):
        self.config, self.grid, self.shapes_file = config, grid, shapes_file

    def size_billions(self, model: str) -> float:
        """Configured parameter count in billions (0 for the demo's trained models)."""
        return (self.grid.model_spec(model).get("n_params") or 0) / 1e9

    def gguf_convert_mem_mb(self, wildcards, attempt):
        """A GGUF conversion holds the file, the float32 weights and their saved copy."""
        n_params = self.grid.model_spec(wildcards.model)["n_params"]
        return int((2000 + 3 * 4 * n_params / 1e6) * retry_growth(attempt))

    def mem_by_size(self, base_mb, per_billion_mb=3000):
        """Host memory grows with the model (bf16 weights are loaded on the host first) and on each retry."""
        return lambda wildcards, attempt: int(
            (base_mb + per_billion_mb * self.size_billions(wildcards.model)) * retry_growth(attempt)
        )

    def mem_by_plan(self, kind, base_mb, per_billion_mb=3000):
        """Generation and scoring: on CPU the memory plan of the model's config.json (entcal.memory.cpu_job_mb;
        evaluated when the model folder exists, so a model the workflow trains or converts is planned from its real
        config), at the configured batch; on GPUs the host memory that loading needs (mem_by_size). Grows on each
        retry."""
        by_size = self.mem_by_size(base_mb, per_billion_mb)
        config, grid = self.config, self.grid

        def mem(wildcards, input, attempt):
            if config["device"] != "cpu":
                return by_size(wildcards, attempt)
            g = config["generation"]
            batch = g["batch_size"] if kind == "generate" else config["scoring"]["batch_size"]
            if batch == "auto":
                return by_size(wildcards, attempt)
            spec = grid.model_spec(wildcards.model)
            dtype = spec.get("dtype") or config["dtype"]
            path = grid.model_path(wildcards.model, wildcards.dataset)
            if not os.path.isfile(os.path.join(path, "config.json")):
                return TBDString()  # a dry run: the model is not trained, downloaded or converted yet
            shape = ModelShape.from_dir(path)
            prompt = g["prompt_tokens"] + 64  # room for special tokens and an instruct model's chat template
            n = min(int(batch), spec.get("n_prompts") or g["n_prompts"])
            total = prompt + grid.max_new_tokens(wildcards.model)
            # auto resolves on the machine that runs the job: plan for the larger of its two outcomes
            plan = max(
                cpu_job_mb(shape, kind, n, total, prompt_len=prompt, dtype=d)
                for d in (["float32", "bfloat16"] if dtype == "auto" else [dtype])
            )
            return int(plan * retry_growth(attempt))

        return mem

    def runtime_by_size(self, base_min, per_billion_min):
        """Minutes: grows with the model and on each retry, never past the site's longest runtime
        (max_runtime_min)."""
        return lambda wildcards, attempt: min(
            self.config["max_runtime_min"],
            int((base_min + per_billion_min * self.size_billions(wildcards.model)) * retry_growth(attempt)),
        )

    @functools.cache
    def shapes(self) -> dict:
        """Model shapes for the cost plan: a downloaded model's config.json, else config/model_shapes.yaml."""
        return load_shapes(self.config, self.shapes_file)

    @functools.cache
    def planned_seconds(self, model, dataset):
        """entcal.plan.model_costs of a hub or local model x dataset on GPUs (seconds per job), None where the
        plan does not apply (CPU runs, trained models and checkpoints, a model without a known shape)."""
        spec = self.config["models"].get(model)
        if self.config["device"] == "cpu" or not spec or spec["source"] == "train" or model not in self.shapes():
            return None
        return model_costs(self.config, model, self.shapes()[model], dataset, GPUSpec())["seconds"]

    def runtime_by_plan(self, kind, base_min, per_billion_min):
        """Minutes, for the GPU jobs: the cost plan's time of this job (entcal.plan.model_costs: every pass it runs,
        a vLLM engine's start, the NF4 entropy pass under precision: paper and the lookahead's candidates included)
        times entcal.plan.RUNTIME_MARGIN, at least RUNTIME_FLOOR_MIN; where the plan does not apply,
        runtime_by_size. Grows on each retry, never past the site's longest runtime (max_runtime_min)."""
        by_size = self.runtime_by_size(base_min, per_billion_min)

        def runtime(wildcards, attempt):
            sec = self.planned_seconds(wildcards.model, wildcards.dataset)
            if sec is None:
                return by_size(wildcards, attempt)
            s = sec[kind][wildcards.setting] if kind == "generate" else sec[kind]
            return min(self.config["max_runtime_min"], int(runtime_minutes(s) * retry_growth(attempt)))

        return runtime

    def gpus(self, wildcards, input):
        """GPUs for a model job. The model entry's ``gpus``; without one, none on a CPU configuration (device: cpu)
        and otherwise the fewest GPUs on which the memory plan of the model's config.json fits
        (entcal.memory.gpus_needed; evaluated once the model folder exists), so that no hub model becomes a CPU job
        by omission."""
        config, grid = self.config, self.grid
        spec = grid.model_spec(wildcards.model)
        if "gpus" in spec:
            return spec["gpus"]
        if config["device"] == "cpu":
            return 0
        path = grid.model_path(wildcards.model, wildcards.dataset)
        if not os.path.isfile(os.path.join(path, "config.json")):
            return TBDString()  # a dry run: the model is not downloaded yet
        g = config["generation"]
        return gpus_needed(
            ModelShape.from_dir(path),
            config["gpu_memory_gb"],
            g["prompt_tokens"] + 64 + grid.max_new_tokens(wildcards.model),
            quantization="nf4" if config["precision"] == "paper" else "none",
        )

    def featurizer_gpus(self, wildcards):
        """One GPU for hub featurizers (gpt2-large), none otherwise."""
        return 1 if self.config["mauve"]["featurizers"][wildcards.featurizer]["source"] == "hf" else 0
