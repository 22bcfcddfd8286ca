"""Adapter: Monte Carlo future-entropy labels for one model x dataset."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.models import weight_dtype
from entcal.predictor_jobs import labels_file
from entcal.runtime import execution

setup_logging(snakemake.log[0], job=snakemake)
cfg = snakemake.params.execution  # how the job runs: a derived param, so changing it reruns nothing
labels_file(
    snakemake.params.model_path,
    snakemake.wildcards.model,
    snakemake.input.windows,
    snakemake.output.labels,
    prompt_tokens=snakemake.params.prompt_tokens,
    max_len=snakemake.params.max_len,
    cal={**snakemake.params.labels, "batch_size": cfg["calibration"]["batch_size"]},
    seed=snakemake.params.seed,
    dtype=weight_dtype(snakemake.params.dtype, cfg["device"]),
    stop_at_eos=snakemake.params.stop_at_eos,
    chat=snakemake.params.chat,
    examples_path=snakemake.input.examples,
    prompts_path=snakemake.input.prompts,
    **execution(snakemake),
)
