"""Adapter: EntCE vs training tokens over checkpoints."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.logs import setup_logging  # noqa: E402
from entcal.plots import plot_data_scaling  # noqa: E402
from entcal.scaling import with_estimator  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
plot_data_scaling(
    with_estimator(pd.read_csv(snakemake.input.summary), snakemake.params.estimator),
    pd.read_csv(snakemake.input.fits),
    [snakemake.output.png, snakemake.output.pdf],
    estimator=snakemake.params.estimator,
)
