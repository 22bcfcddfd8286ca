"""Adapter: reference log loss and teacher-forced entropy for one model x dataset."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.score_jobs import score_file
from entcal.logs import setup_logging
from entcal.models import weight_dtype
from entcal.runtime import execution

setup_logging(snakemake.log[0], job=snakemake)
cfg = snakemake.params.execution  # how the job runs: a derived param, so changing it reruns nothing
score_file(
    snakemake.params.model_path,
    snakemake.wildcards.model,
    snakemake.input.prompts,
    snakemake.output.scores,
    settings=snakemake.params.settings,
    epsilon=snakemake.params.truncation_epsilon,
    dtype=weight_dtype(snakemake.params.dtype, cfg["device"]),
    precision=snakemake.params.precision,
    meta={"dataset": snakemake.wildcards.dataset},
    calibration=snakemake.input.get("calibration"),
    head=snakemake.input.get("head"),
    batch_size=cfg["scoring"]["batch_size"],
    shard_size=cfg["generation"]["shard_size"],
    **execution(snakemake),
)
