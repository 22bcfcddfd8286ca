"""Adapter (local rule): snapshot a hub dataset at its pinned revision."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.hub import download_dataset  # noqa: E402
from entcal.logs import setup_logging  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
download_dataset(
    snakemake.wildcards.dataset,
    repo_id=snakemake.params.repo_id,
    revision=snakemake.params.revision,
    out_dir=snakemake.output[0],
    cache_dir=snakemake.config["hf_cache_dir"],  # where, not what: not a param
)
