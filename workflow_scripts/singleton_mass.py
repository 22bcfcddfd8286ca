"""Adapter: singleton mass under power-law data (exact and Monte Carlo) and Proposition 3.1."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.theory import run_singleton_study

setup_logging(snakemake.log[0], job=snakemake)
run_singleton_study(
    snakemake.params.theory,
    seed=snakemake.params.seed,
    mass_out=snakemake.output.mass,
    slopes_out=snakemake.output.slopes,
    prop_out=snakemake.output.prop31,
)
