"""Adapter: train one demo model on one dataset."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.train import train_model

setup_logging(snakemake.log[0], job=snakemake)
train_cfg = {**snakemake.params.training, **snakemake.params.budget}
train_cfg["max_positions"] = max(4096, train_cfg["seq_len"])
train_model(
    snakemake.input.train_ids,
    snakemake.input.tokenizer,
    snakemake.output[0],
    arch=snakemake.params.arch,
    train_cfg=train_cfg,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
)
