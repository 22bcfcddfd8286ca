"""Adapter: Figure 3 layout (per-step entropy vs log loss), raw or smoothed."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.logs import setup_logging  # noqa: E402
from entcal.plots import plot_per_step  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
plot_per_step(
    pd.read_parquet(snakemake.input.per_step),
    pd.read_csv(snakemake.input.summary),
    [snakemake.output.png, snakemake.output.pdf],
    smoothing=snakemake.params.smoothing if snakemake.wildcards.smooth else 1.0,
    smoothing_logloss=snakemake.params.smoothing_logloss if snakemake.wildcards.smooth else 1.0,
)
