"""The README's demo figure and table, made from a finished demo run by a command, never by hand.

``python -m entcal.showcase [results_dir] [--out docs]`` (default ``results/demo``) writes:

- ``{out}/demo_per_step.png``: per-step entropy of each model's own generations (solid) against its log loss
  on the human continuation (dashed), ancestral sampling at T = 1, every base model (the workflow's
  ``plot_per_step`` figure, smoothed as the run's ``analysis.smoothing``);
- ``{out}/demo_table.md``: the five largest models' rows at T = 1 of ``tables/summary.csv`` as a Markdown
  table (model, corpus, entropy, log loss, EntCE ± its standard error, its two parts), which the README quotes;

and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from entcal.plots import plot_per_step
from entcal.results import grid, load_per_step, load_summary

FIGURE, TABLE = "demo_per_step.png", "demo_table.md"


def headline_rows(summary: pd.DataFrame, n: int = 5, temperature: float = 1.0) -> pd.DataFrame:
    """The ``n`` largest models' ancestral rows at ``temperature`` (intermediate checkpoints left out),
    largest first, then by dataset."""
    s = summary[(summary["sampler"] == "ancestral") & np.isclose(summary["temperature"], temperature)]
    if "checkpoint_of" in s:
        s = s[s["checkpoint_of"].isna() | (s["checkpoint_of"].astype(str) == "")]
    return s.sort_values(["n_params", "model", "dataset"], ascending=[False, True, True]).head(n).reset_index(drop=True)


def markdown_table(rows: pd.DataFrame) -> str:
    head = (
        "| model | corpus | T | entropy | log loss | EntCE ± se | gen − TF | TF − log loss |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r.model}{' (instruct)' if r.instruct else ''} | {r.dataset} | {r.temperature:g} | {r.entropy_mean:.2f} | "
        f"{r.logloss_mean:.2f} | {r.entce:+.2f} ± {r.entce_se:.2f} | {r.gen_minus_tf:+.2f} | "
        f"{r.tf_minus_logloss:+.2f} |\n"
        for r in rows.itertuples()
    )
    return head + body


def make(results_dir: str | Path = "results/demo", out: str | Path = "docs", n_rows: int = 5) -> tuple[Path, Path, str]:
    """Write the figure and the table; returns their paths and the table's text."""
    g = grid(results_dir)
    summary = load_summary(results_dir)
    per_step = load_per_step(results_dir)
    if summary.empty:
        raise ValueError(
            f"{results_dir}/tables/summary.csv has no rows: run the demo first "
            "(.venv/bin/snakemake --cores 2 --configfile config/demo.yaml)"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    analysis = g.config.get("analysis", {})
    plot_per_step(
        per_step,
        summary,
        [str(out / FIGURE)],
        smoothing=analysis.get("smoothing", 1.0),
        smoothing_logloss=analysis.get("smoothing_logloss"),
    )
    table = markdown_table(headline_rows(summary, n_rows))
    (out / TABLE).write_text(table)
    return out / FIGURE, out / TABLE, table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m entcal.showcase", description=__doc__.split("\n\n")[0])
    ap.add_argument("results_dir", nargs="?", default="results/demo", help="a finished demo run (default results/demo)")
    ap.add_argument("--out", default="docs", help="where the figure and the table go (default docs)")
    ap.add_argument("--rows", type=int, default=5, help="rows of the table (default 5)")
    a = ap.parse_args(argv)
    fig, tab, table = make(a.results_dir, a.out, a.rows)
    print(f"wrote {fig} and {tab} from {a.results_dir}\n\n{table}", end="")


if __name__ == "__main__":
    main()
