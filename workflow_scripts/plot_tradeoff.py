"""Adapter: Figure 4 layout (EntCE vs log loss: temperature, instruct, truncation)."""

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.plots import plot_tradeoff
from entcal.scaling import with_estimator

setup_logging(snakemake.log[0], job=snakemake)
# summary.csv (Figure 4), with summary_extra.csv for the figure with the samplers beyond the paper
summary = pd.concat([pd.read_csv(p) for p in snakemake.input.summaries], ignore_index=True)
plot_tradeoff(
    with_estimator(summary, snakemake.params.estimator),
    [snakemake.output.png, snakemake.output.pdf],
    estimator=snakemake.params.estimator,
)
