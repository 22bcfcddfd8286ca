"""Adapter: log EntCE vs log size fits per family x dataset."""

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.scaling import data_scaling_fits, write_scaling_fits

setup_logging(snakemake.log[0], job=snakemake)
write_scaling_fits(
    snakemake.input.summary,
    snakemake.output.fits,
    bootstrap=snakemake.input.bootstrap,
    power_law=snakemake.input.power_law,
    estimator=snakemake.params.estimator,
    size_axis=snakemake.params.size_axis,
)
data_scaling_fits(pd.read_csv(snakemake.input.summary), snakemake.params.estimator).to_csv(
    snakemake.output.data_fits, index=False, float_format="%.6g"
)
