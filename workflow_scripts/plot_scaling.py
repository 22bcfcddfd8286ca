"""Adapter: Figure 2 layout (log EntCE vs log size with fits)."""

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.plots import plot_scaling
from entcal.scaling import with_estimator, with_size_axis

setup_logging(snakemake.log[0], job=snakemake)
plot_scaling(
    with_size_axis(
        with_estimator(pd.read_csv(snakemake.input.summary), snakemake.params.estimator), snakemake.params.size_axis
    ),
    pd.read_csv(snakemake.input.fits),
    [snakemake.output.png, snakemake.output.pdf],
    estimator=snakemake.params.estimator,
)
