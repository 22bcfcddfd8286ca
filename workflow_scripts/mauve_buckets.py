"""Adapter: MAUVE per entropy bucket for one dataset and featurizer."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.quality import build_bucket_table

setup_logging(snakemake.log[0], job=snakemake)
build_bucket_table(
    snakemake.input.excerpts,
    snakemake.input.features,
    snakemake.wildcards.featurizer,
    snakemake.params.cfg,
    snakemake.params.seed,
    snakemake.output.table,
)
