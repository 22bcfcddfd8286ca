"""Adapter: reference log loss and teacher-forced entropy for one model x dataset."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.logs import setup_logging  # noqa: E402
from entcal.score import score_file  # noqa: E402

setup_logging(snakemake.log[0])
g = snakemake.params.generation
score_file(
    snakemake.params.model_path,
    snakemake.wildcards.model,
    snakemake.input.prompts,
    snakemake.output.scores,
    settings=snakemake.params.settings,
    batch_size=snakemake.params.scoring["batch_size"],
    dtype=snakemake.params.dtype,
    device=snakemake.params.device,
    threads=snakemake.threads,
    epsilon=snakemake.params.scoring["truncation_epsilon"],
    calibration=snakemake.input.get("calibration"),
    head=snakemake.input.get("head"),
    shard_size=g["shard_size"],
    precision=snakemake.params.precision,
    gpus=snakemake.resources.gpu,
    gpu_memory_gb=snakemake.params.gpu_memory_gb,
)
