"""Adapter (rule convert_gguf): check and convert a real model's GGUF file into a save_pretrained folder."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.models import convert_gguf  # noqa: E402
from entcal.logs import setup_logging  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
convert_gguf(snakemake.wildcards.model, snakemake.params.spec, snakemake.output[0])
