"""Adapter (rule convert_gguf): check and convert a real model's GGUF file into a save_pretrained folder."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.gguf_convert import convert_gguf

setup_logging(snakemake.log[0], job=snakemake)
convert_gguf(snakemake.wildcards.model, snakemake.params.spec, snakemake.output[0])
