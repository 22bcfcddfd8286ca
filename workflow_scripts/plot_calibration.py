"""Adapter: teacher-forced trade-off of the tilts against temperature, and the generation-side points."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

import pandas as pd
from entcal.logs import setup_logging
from entcal.extra_plots import plot_calibration, plot_calibration_study

setup_logging(snakemake.log[0], job=snakemake)
table = pd.read_csv(snakemake.input.table)
plot_calibration(table, pd.read_csv(snakemake.input.tradeoff), [snakemake.output.png, snakemake.output.pdf])
roots = pd.read_csv(snakemake.input.roots)
plot_calibration_study(
    table, pd.read_csv(snakemake.input.study), [snakemake.output.study_png, snakemake.output.study_pdf], roots
)
