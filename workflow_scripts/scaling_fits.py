"""Adapter: log EntCE vs log size fits per family x dataset."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.logs import setup_logging  # noqa: E402
from entcal.scaling import write_scaling_fits  # noqa: E402

setup_logging(snakemake.log[0])
write_scaling_fits(snakemake.input.summary, snakemake.output.fits)
