"""Adapter: Figure 3 layout (per-step entropy vs log loss), raw or smoothed."""

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.plots import plot_per_step

setup_logging(snakemake.log[0], job=snakemake)
plot_per_step(
    pd.read_parquet(snakemake.input.per_step),
    pd.read_csv(snakemake.input.summary),
    [snakemake.output.png, snakemake.output.pdf],
    smoothing=snakemake.params.smoothing if snakemake.wildcards.smooth else 1.0,
    smoothing_logloss=snakemake.params.smoothing_logloss if snakemake.wildcards.smooth else 1.0,
)
