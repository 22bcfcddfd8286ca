"""Adapter: the exact future-entropy study (Algorithm 1, baselines, noisy predictors, MC labels)."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.exact_study import run_exact_study
from entcal.logs import setup_logging

setup_logging(snakemake.log[0], job=snakemake)
o = snakemake.output
run_exact_study(snakemake.params.exact, snakemake.params.seed, o.table, o.steps, o.noise, o.mc)
