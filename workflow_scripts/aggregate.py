"""Adapter: per-step curves and the summary table."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.aggregate import aggregate
from entcal.logs import setup_logging

setup_logging(snakemake.log[0], job=snakemake)
aggregate(
    snakemake.params.jobs,
    per_step_out=snakemake.output.per_step,
    summary_out=snakemake.output.summary,
    max_len=snakemake.params.max_len,
    per_prompt_out=snakemake.output.per_prompt,
    missing_out=snakemake.output.missing,
    reference_start=snakemake.params.reference_start,
    fidelity=snakemake.params.fidelity,
    bootstrap_out=snakemake.output.get("bootstrap"),  # the paper's tables only: the scaling fits read it
    n_boot=snakemake.params.n_boot,
    seed=snakemake.params.seed,
    estimator=snakemake.params.estimator,
)
