"""Adapter: the MAUVE bucket table of every dataset, Figure 5 and the example excerpts."""

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging
from entcal.extra_plots import plot_mauve
from entcal.quality import example_markdown

setup_logging(snakemake.log[0], job=snakemake)
tables = []
for path in snakemake.input.tables:
    dataset = Path(path).parent.name
    t = pd.read_csv(path)
    tables.append(t.assign(dataset=dataset))
table = pd.concat(tables, ignore_index=True)
table = table[["dataset"] + [c for c in table.columns if c != "dataset"]]
table.to_csv(snakemake.output.table, index=False, float_format="%.6g")
summary = pd.concat([pd.read_csv(p) for p in snakemake.input.summaries], ignore_index=True)
plot_mauve(table, summary, [snakemake.output.png, snakemake.output.pdf])
first = table["featurizer"].iloc[0] if len(table) else None
parts = [
    "# Example excerpts by entropy bucket",
    "",
    f"Random excerpts from the lowest, middle and highest entropy buckets (MAUVE from featurizer {first}).",
    "",
]
for dataset, path in zip(snakemake.params.datasets, snakemake.input.excerpts):
    ex = pd.read_parquet(path)
    parts.append(
        example_markdown(
            ex, table[(table["dataset"] == dataset) & (table["featurizer"] == first)], dataset, snakemake.params.seed
        )
    )
Path(snakemake.output.examples).write_text("\n".join(parts))
