"""Adapter: one more future-entropy head on the same labels, with its own seed (the root searches' head seeds)."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.models import weight_dtype
from entcal.predictor_jobs import train_head_file
from entcal.runtime import execution

setup_logging(snakemake.log[0], job=snakemake)
cfg = snakemake.params.execution  # how the job runs: a derived param, so changing it reruns nothing
train_head_file(
    snakemake.params.model_path,
    snakemake.wildcards.model,
    snakemake.input.labels,
    snakemake.input.calibration,
    snakemake.output.head,
    head_seed=int(snakemake.wildcards.head_seed),
    cal={**snakemake.params.cal, "batch_size": cfg["calibration"]["batch_size"]},
    dtype=weight_dtype(snakemake.params.dtype, cfg["device"]),
    **execution(snakemake),
)
