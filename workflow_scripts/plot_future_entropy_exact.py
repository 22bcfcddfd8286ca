"""Adapter: figure panels of the exact future-entropy study."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.logs import setup_logging  # noqa: E402
from entcal.plots import plot_future_entropy_exact  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
i = snakemake.input
plot_future_entropy_exact(
    pd.read_csv(i.table),
    pd.read_csv(i.steps),
    pd.read_csv(i.noise),
    pd.read_csv(i.mc),
    [snakemake.output.png, snakemake.output.pdf],
)
