"""Adapter: sample continuations for one model x dataset x sampler setting."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.generate import generate_file  # noqa: E402
from entcal.logs import setup_logging  # noqa: E402

setup_logging(snakemake.log[0])
g, s = snakemake.params.generation, snakemake.params.setting
generate_file(
    snakemake.params.model_path,
    snakemake.wildcards.model,
    snakemake.input.prompts,
    snakemake.output.generations,
    sampler=s["sampler"],
    temperature=float(s["temperature"]),
    sampler_param=s.get("param"),
    max_new_tokens=g["max_new_tokens"],
    batch_size=g["batch_size"],
    seed=snakemake.params.seed,
    stop_at_eos=g["stop_at_eos"],
    dtype=snakemake.params.dtype,
    device=snakemake.params.device,
    threads=snakemake.threads,
    meta={"dataset": snakemake.wildcards.dataset, "setting": snakemake.wildcards.setting},
    calibration=snakemake.input.get("calibration"),
    head=snakemake.input.get("head"),
    shard_size=g["shard_size"],
    backend=g["backend"],
    gpus=snakemake.resources.gpu,
    precision=snakemake.params.precision,
    gpu_memory_gb=snakemake.params.gpu_memory_gb,
)
