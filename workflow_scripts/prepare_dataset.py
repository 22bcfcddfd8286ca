"""Adapter: read a corpus, split it by document, cut evaluation windows."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.data import prepare_dataset
from entcal.logs import setup_logging

setup_logging(snakemake.log[0], job=snakemake)
prepare_dataset(
    snakemake.params.spec,
    docs_out=snakemake.output.docs,
    examples_out=snakemake.output.examples,
    seed=snakemake.params.seed,
    raw_dir=snakemake.input.raw or None,
    calibration_out=snakemake.output.calibration,
    threads=snakemake.threads,
    name=snakemake.wildcards.dataset,
    calibration_needed=snakemake.params.calibration_needed,
)
