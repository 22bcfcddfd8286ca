"""Adapter: singleton mass under power-law data (exact and Monte Carlo) and Proposition 3.1."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.logs import setup_logging  # noqa: E402
from entcal.theory import run_singleton_study  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
run_singleton_study(
    snakemake.params.theory,
    seed=snakemake.params.seed,
    mass_out=snakemake.output.mass,
    slopes_out=snakemake.output.slopes,
    prop_out=snakemake.output.prop31,
)
