"""Adapter: teacher-forced trade-off of the tilts against temperature, and the generation-side points."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
import pandas as pd  # noqa: E402

from entcal.logs import setup_logging  # noqa: E402
from entcal.plots import plot_calibration, plot_calibration_study  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
table = pd.read_csv(snakemake.input.table)
plot_calibration(table, pd.read_csv(snakemake.input.tradeoff), [snakemake.output.png, snakemake.output.pdf])
plot_calibration_study(
    table, pd.read_csv(snakemake.input.study), [snakemake.output.study_png, snakemake.output.study_pdf]
)
