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

setup_logging(snakemake.log[0], outputs=snakemake.output)
plot_tradeoff(pd.read_csv(snakemake.input.summary), [snakemake.output.png, snakemake.output.pdf])
