"""Adapter: byte-level BPE on a dataset's training split, and the encoded training stream."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.logs import setup_logging  # noqa: E402
from entcal.tokenization import build_tokenizer  # noqa: E402

setup_logging(snakemake.log[0], job=snakemake)
build_tokenizer(
    snakemake.input.docs,
    tokenizer_dir=snakemake.output.tokenizer,
    train_ids_path=snakemake.output.train_ids,
    vocab_size=snakemake.params.vocab_size,
)
