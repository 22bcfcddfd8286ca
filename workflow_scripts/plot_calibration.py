"""Adapter: teacher-forced trade-off of the tilts against temperature, and the generation-side points."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
import pandas as pd  # noqa: E402

from entcal.logs import setup_logging  # noqa: E402
from entcal.plots import plot_calibration  # noqa: E402

setup_logging(snakemake.log[0], outputs=snakemake.output)
plot_calibration(pd.read_csv(snakemake.input.table), pd.read_csv(snakemake.input.tradeoff), snakemake.output)
