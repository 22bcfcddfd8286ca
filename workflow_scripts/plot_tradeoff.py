"""Adapter: Figure 4 layout (EntCE vs log loss: temperature, instruct, truncation)."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.logs import setup_logging  # noqa: E402
from entcal.plots import plot_tradeoff  # noqa: E402
from entcal.scaling import with_estimator  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
# summary.csv (Figure 4), with summary_extra.csv for the figure with the samplers beyond the paper
summary = pd.concat([pd.read_csv(p) for p in snakemake.input.summaries], ignore_index=True)
plot_tradeoff(
    with_estimator(summary, snakemake.params.estimator),
    [snakemake.output.png, snakemake.output.pdf],
    estimator=snakemake.params.estimator,
)
