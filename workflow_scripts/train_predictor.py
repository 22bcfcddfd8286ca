"""Adapter: train the future-entropy head, fit alpha per step bucket, measure the Mirostat target."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.models import weight_dtype
from entcal.predictor_jobs import train_predictor_file
from entcal.runtime import execution

setup_logging(snakemake.log[0], job=snakemake)
cfg = snakemake.params.execution  # how the job runs: a derived param, so changing it reruns nothing
train_predictor_file(
    snakemake.params.model_path,
    snakemake.wildcards.model,
    snakemake.input.labels,
    snakemake.input.windows,
    snakemake.output.head,
    snakemake.output.tradeoff,
    samplers=snakemake.params.samplers,
    prompt_tokens=snakemake.params.prompt_tokens,
    max_len=snakemake.params.max_len,
    cal={**snakemake.params.predictor, "batch_size": cfg["calibration"]["batch_size"]},
    seed=snakemake.params.seed,
    dtype=weight_dtype(snakemake.params.dtype, cfg["device"]),
    dataset=snakemake.wildcards.dataset,
    chat=snakemake.params.chat,
    examples_path=snakemake.input.examples,
    prompts_path=snakemake.input.prompts,
    **execution(snakemake),
)
