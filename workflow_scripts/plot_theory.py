"""Adapter: Figure 1 (singleton mass vs m; rank-frequency of every dataset)."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.logs import setup_logging  # noqa: E402
from entcal.plots import plot_theory  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
plot_theory(
    pd.read_csv(snakemake.input.mass),
    pd.read_parquet(snakemake.input.curves),
    pd.read_csv(snakemake.input.table),
    [snakemake.output.png, snakemake.output.pdf],
)
