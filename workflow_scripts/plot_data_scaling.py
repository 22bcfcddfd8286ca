"""Adapter: EntCE vs training tokens over checkpoints."""

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.plots import plot_data_scaling
from entcal.scaling import with_estimator

setup_logging(snakemake.log[0], job=snakemake)
plot_data_scaling(
    with_estimator(pd.read_csv(snakemake.input.summary), snakemake.params.estimator),
    pd.read_csv(snakemake.input.fits),
    [snakemake.output.png, snakemake.output.pdf],
    estimator=snakemake.params.estimator,
)
