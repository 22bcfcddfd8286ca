"""Adapter: byte-level BPE on a dataset's training split, and the encoded training stream."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.tokenization import build_tokenizer

setup_logging(snakemake.log[0], job=snakemake)
build_tokenizer(
    snakemake.input.docs,
    tokenizer_dir=snakemake.output.tokenizer,
    train_ids_path=snakemake.output.train_ids,
    vocab_size=snakemake.params.vocab_size,
)
