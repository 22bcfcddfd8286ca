"""Adapter: every job's Snakemake benchmark record (time, peak memory) in one table."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.aggregate import benchmark_table  # noqa: E402
from entcal.logs import setup_logging  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
benchmark_table(snakemake.params.bench_dir).to_csv(snakemake.output.table, index=False, float_format="%.4g")
