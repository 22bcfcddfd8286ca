"""Adapter: featurize every distinct excerpt text once with one featurizer."""

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.models import resolve_device
from entcal.quality import build_features

setup_logging(snakemake.log[0], job=snakemake)
torch.set_num_threads(snakemake.threads)
build_features(
    snakemake.input.excerpts,
    snakemake.params.spec,
    snakemake.params.model_path,
    snakemake.output.features,
    device=str(resolve_device(snakemake.params.execution["device"])),  # where, not what: reruns nothing
)
