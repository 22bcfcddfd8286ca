"""Adapter: rank-frequency exponents (OLS and MLE) of every dataset."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.theory import power_law_tables

setup_logging(snakemake.log[0], job=snakemake)
named = dict(snakemake.input.items())
table, curves = power_law_tables(
    docs={k.removeprefix("docs_"): v for k, v in named.items() if k.startswith("docs_")},
    token_ids={k.removeprefix("ids_"): v for k, v in named.items() if k.startswith("ids_")},
    top=snakemake.params.top,
)
table.to_csv(snakemake.output.table, index=False, float_format="%.6g")
curves.to_parquet(snakemake.output.curves, index=False)
