"""Adapter: cut generations and references of one dataset into entropy-labelled excerpts."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.logs import setup_logging  # noqa: E402
from entcal.quality import build_excerpts  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
build_excerpts(snakemake.params.jobs, snakemake.params.window, snakemake.output.excerpts)
