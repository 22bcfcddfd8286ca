"""Adapter: reference log loss vs context position with its power-law fit."""

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.plots import plot_context

setup_logging(snakemake.log[0], job=snakemake)
plot_context(
    pd.read_parquet(snakemake.input.per_step),
    pd.read_csv(snakemake.input.fits),
    [snakemake.output.png, snakemake.output.pdf],
    reference_start=snakemake.params.reference_start,
)
