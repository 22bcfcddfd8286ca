"""Adapter: L(l) = L_inf + A l^(-beta) fits of reference log loss vs context position."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.logs import setup_logging  # noqa: E402
from entcal.scaling import context_fits  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
fits = context_fits(pd.read_parquet(snakemake.input.per_step), snakemake.params.prompt_tokens)
fits.to_csv(snakemake.output.fits, index=False, float_format="%.6g")
