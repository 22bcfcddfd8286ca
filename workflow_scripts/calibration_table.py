"""Adapter: every sampler of the calibrated models side by side, and the predictors' test errors."""

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
import pandas as pd  # noqa: E402

from entcal.aggregate import calibration_tables  # noqa: E402
from entcal.logs import setup_logging  # noqa: E402

setup_logging(snakemake.log[0], outputs=snakemake.output)
table, pred, tradeoff = calibration_tables(
    pd.concat([pd.read_csv(p) for p in snakemake.input.summaries], ignore_index=True),  # the paper's and the extras'
    [json.loads(Path(p).read_text()) for p in snakemake.input.predictors],
    [pd.read_csv(p) for p in snakemake.input.tradeoffs],
)
table.to_csv(snakemake.output.table, index=False, float_format="%.6g")
pred.to_csv(snakemake.output.predictors, index=False, float_format="%.6g")
tradeoff.to_csv(snakemake.output.tradeoff, index=False, float_format="%.6g")
