"""Adapter: reference log loss vs context position with its power-law fit."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.logs import setup_logging  # noqa: E402
from entcal.plots import plot_context  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
plot_context(
    pd.read_parquet(snakemake.input.per_step),
    pd.read_csv(snakemake.input.fits),
    [snakemake.output.png, snakemake.output.pdf],
    reference_start=snakemake.params.reference_start,
)
