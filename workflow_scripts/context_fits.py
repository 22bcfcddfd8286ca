"""Adapter: L(l) = L_inf + A l^(-beta) fits of reference log loss vs context position."""

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.scaling import context_fits

setup_logging(snakemake.log[0], job=snakemake)
# each model x dataset's prompts as fed (their sidecars' mean_prompt_len: BOS, chat template or instruction, window)
lens = {
    (model, dataset): json.loads(Path(f).read_text())["mean_prompt_len"]
    for (dataset, model), f in zip(snakemake.params.pairs, snakemake.input.prompts, strict=True)
}
fits = context_fits(pd.read_parquet(snakemake.input.per_step), lens, reference_start=snakemake.params.reference_start)
fits.to_csv(snakemake.output.fits, index=False, float_format="%.6g")
