"""Adapter: Figure 1 (singleton mass vs m; rank-frequency of every dataset)."""

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.plots import plot_theory

setup_logging(snakemake.log[0], job=snakemake)
plot_theory(
    pd.read_csv(snakemake.input.mass),
    pd.read_parquet(snakemake.input.curves),
    pd.read_csv(snakemake.input.table),
    [snakemake.output.png, snakemake.output.pdf],
)
