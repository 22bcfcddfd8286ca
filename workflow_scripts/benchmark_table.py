"""Adapter: every job's Snakemake benchmark record (time, peak memory) in one table."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.aggregate import benchmark_table
from entcal.logs import setup_logging

setup_logging(snakemake.log[0], job=snakemake)
benchmark_table(snakemake.params.bench_dir).to_csv(snakemake.output.table, index=False, float_format="%.4g")
