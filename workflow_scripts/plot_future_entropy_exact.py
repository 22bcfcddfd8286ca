"""Adapter: figure panels of the exact future-entropy study."""

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.plots import plot_future_entropy_exact

setup_logging(snakemake.log[0], job=snakemake)
i = snakemake.input
plot_future_entropy_exact(
    pd.read_csv(i.table),
    pd.read_csv(i.steps),
    pd.read_csv(i.noise),
    pd.read_csv(i.mc),
    [snakemake.output.png, snakemake.output.pdf],
)
