"""Adapter: the exact future-entropy study (Algorithm 1, baselines, noisy predictors, MC labels)."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.exact import run_exact_study  # noqa: E402
from entcal.logs import setup_logging  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
o = snakemake.output
run_exact_study(snakemake.params.exact, snakemake.params.seed, o.table, o.steps, o.noise, o.mc)
