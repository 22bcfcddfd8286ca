"""Adapter: MAUVE per entropy bucket for one dataset and featurizer."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.logs import setup_logging  # noqa: E402
from entcal.quality import build_bucket_table  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
build_bucket_table(
    snakemake.input.excerpts,
    snakemake.input.features,
    snakemake.wildcards.featurizer,
    snakemake.params.cfg,
    snakemake.params.seed,
    snakemake.output.table,
)
