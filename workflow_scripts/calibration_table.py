"""Adapter: every sampler of the calibrated models side by side, and the predictors' test errors."""

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

import pandas as pd
from entcal.predictor_tables import calibration_tables, predictor_variants
from entcal.logs import setup_logging
from entcal.calibrated_points import measured_study, primary_answer
from entcal.files import read_parquet, read_sidecar
from entcal.root_search import PRIMARY_COLUMNS, ROOT_STEP_COLUMNS
from entcal.study import answer, calibration_study, setting_answer, setting_comparison

setup_logging(snakemake.log[0], job=snakemake)
log = logging.getLogger("calibration_table")
summary = pd.concat(
    [pd.read_csv(p) for p in snakemake.input.summaries], ignore_index=True
)  # the paper's and the extras'
table, pred, tradeoff = calibration_tables(
    summary,
    [json.loads(Path(p).read_text()) for p in snakemake.input.predictors],
    [pd.read_csv(p) for p in snakemake.input.tradeoffs],
)
table.to_csv(snakemake.output.table, index=False, float_format="%.6g")
pred.to_csv(snakemake.output.predictors, index=False, float_format="%.6g")
tradeoff.to_csv(snakemake.output.tradeoff, index=False, float_format="%.6g")
predictor_variants([json.loads(Path(p).read_text()) for p in snakemake.input.predictors]).to_csv(
    snakemake.output.variants, index=False, float_format="%.6g"
)
per_prompt = pd.concat([pd.read_parquet(p) for p in snakemake.input.per_prompt], ignore_index=True)
calibrated = set(table["model"])
if (snakemake.params.root or {}).get("methods"):  # measured points (root searches), the primary question
    study, roots, primary = measured_study(
        [read_parquet(p) for p in snakemake.input.searches],
        [(read_sidecar(p), read_parquet(p)) for p in snakemake.input.points],
        n_boot=snakemake.params.n_boot,
        seed=snakemake.params.seed,
        estimator=snakemake.params.estimator,
        primary=snakemake.params.primary,
    )
    lines = primary_answer(primary)
else:  # no searches: points interpolated between the configured settings, exploratory, no primary question
    study = calibration_study(
        per_prompt[per_prompt["model"].isin(calibrated)],
        summary,
        n_boot=snakemake.params.n_boot,
        seed=snakemake.params.seed,
    ).assign(point="interpolated", role="exploratory")
    roots, primary = pd.DataFrame(columns=ROOT_STEP_COLUMNS), pd.DataFrame(columns=PRIMARY_COLUMNS)
    lines = answer(study)
study.to_csv(snakemake.output.study, index=False, float_format="%.6g")
roots.to_csv(snakemake.output.roots, index=False, float_format="%.6g")
primary.to_csv(snakemake.output.primary, index=False, float_format="%.6g")
settings = setting_comparison(
    per_prompt[per_prompt["model"].isin(calibrated)],
    summary,
    n_boot=snakemake.params.n_boot,
    seed=snakemake.params.seed,
)
settings = settings.assign(role="exploratory")
settings.to_csv(snakemake.output.settings, index=False, float_format="%.6g")
for line in lines + setting_answer(settings):
    log.info("%s", line)
