"""Adapter: cut generations and references of one dataset into entropy-labelled excerpts."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.quality import build_excerpts

setup_logging(snakemake.log[0], job=snakemake)
build_excerpts(snakemake.params.jobs, snakemake.params.window, snakemake.output.excerpts)
