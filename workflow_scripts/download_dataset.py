"""Adapter (local rule): snapshot a hub dataset at its pinned revision."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.hub import download_dataset
from entcal.logs import setup_logging

setup_logging(snakemake.log[0], job=snakemake)
download_dataset(
    snakemake.wildcards.dataset,
    repo_id=snakemake.params.repo_id,
    revision=snakemake.params.revision,
    out_dir=snakemake.output[0],
    cache_dir=snakemake.params.execution["hf_cache_dir"],  # where, not what: reruns nothing
)
