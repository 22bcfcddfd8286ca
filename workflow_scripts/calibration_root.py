"""Adapter: one root search, a method's knob moved until EntCE = 0 on real generations (entcal.root_jobs)."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.models import weight_dtype
from entcal.root_jobs import root_search_file
from entcal.runtime import execution

setup_logging(snakemake.log[0], job=snakemake)
cfg = snakemake.params.execution  # how the job runs: a derived param, so changing it reruns nothing
search = snakemake.wildcards.search
method, _, head_seed = search.partition("-s")
root_search_file(
    snakemake.params.model_path,
    snakemake.wildcards.model,
    snakemake.input.prompts,
    snakemake.output.steps,
    snakemake.output.point,
    dataset=snakemake.wildcards.dataset,
    method=method,
    head_seed=int(head_seed) if head_seed else None,
    root=snakemake.params.root,
    analysis=snakemake.params.analysis,
    generation=snakemake.params.sampling,
    seed=snakemake.params.seed,
    dtype=weight_dtype(snakemake.params.dtype, cfg["device"]),
    epsilon=snakemake.params.truncation_epsilon,
    head=snakemake.input.get("head"),
    calibration=snakemake.input.get("calibration"),
    batch_size=cfg["generation"]["batch_size"],
    scoring_batch_size=cfg["scoring"]["batch_size"],
    shard_size=cfg["generation"]["shard_size"],
    **execution(snakemake),
)
