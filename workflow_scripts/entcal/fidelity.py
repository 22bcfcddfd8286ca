"""What the ``fidelity`` switches change on a finished run, measured from its own files.

``python -m entcal.fidelity [results_dir]`` prints one row per paper setting (model x dataset x temperature)
of a run, recomputed from its generations and scores with :func:`entcal.aggregate.curves`, the code the
``aggregate`` rule runs:

- ``entce_mean`` and ``entce_pooled``: the two estimators (``analysis.estimator``: exact ``mean``, authors
  ``pooled``) with the run's own ``reference_start``;
- ``entce_mean_start2`` (and ``_pooled``): the same with reference tokens 2..T+1 in place of 1..T
  (``analysis.reference_start``: the authors' 2); ``start2_minus_start1`` is the change in EntCE;
- ``smooth_gap`` (``smooth_gap_mean``): the largest (mean) gap between Figure 3's log-loss curve smoothed at
  0.1 (the authors') and at the run's ``analysis.smoothing`` (``analysis.smoothing_logloss``), nats.

The text rules and the NF4 precision change the generations themselves; they are measured by running the
workflow twice (``tests/integration/test_paper_path.py`` does, on stand-ins).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from entcal.curves import curves
from entcal.files import read_parquet
from entcal.plots import ema
from entcal.results import grid


def setting_rows(gen: pd.DataFrame, ref: pd.DataFrame, max_len: int, smoothing: float, start: int = 1) -> dict:
    """The fidelity figures of one generation file and its scores (see the module docstring)."""
    steps, s1, _, _ = curves(gen, ref, max_len, start)
    _, s2, _, _ = curves(gen, ref, max_len, 2)
    ll = steps["logloss_mean"].to_numpy()
    return {
        "entce_mean": s1["entce"],
        "entce_pooled": s1["entce_pooled"],
        "pooled_minus_mean": s1["entce_pooled"] - s1["entce"],
        "entce_mean_start2": s2["entce"],
        "entce_pooled_start2": s2["entce_pooled"],
        "start2_minus_start1": s2["entce"] - s1["entce"],
        "smooth_gap": float(np.nanmax(np.abs(ema(ll, 0.1) - ema(ll, smoothing)))),
        "smooth_gap_mean": float(np.nanmean(np.abs(ema(ll, 0.1) - ema(ll, smoothing)))),
        "eos_fraction": s1["eos_fraction"],
        "mean_gen_tokens": s1["mean_gen_tokens"],
    }


def measure(results_dir: str = "results/demo") -> pd.DataFrame:
    """One row per ancestral (paper) setting of a finished run: model, dataset, setting, then
    :func:`setting_rows`'s columns."""
    g = grid(results_dir)
    cfg = g.config
    max_len, smoothing = cfg["analysis"]["max_len"], cfg["analysis"]["smoothing"]
    start = int(cfg["analysis"].get("reference_start") or 1)
    rows = []
    for job in g.aggregate_jobs("paper"):
        gen = read_parquet(job["generations"], {"model": job["model"]})
        ref = read_parquet(job["scores"], {"model": job["model"]})
        ref = ref[ref["setting"] == job["setting"]]
        rows.append(
            {
                "model": job["model"],
                "dataset": job["dataset"],
                "setting": job["setting"],
                **setting_rows(gen, ref, max_len, smoothing, start),
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results_dir", nargs="?", default="results/demo")
    args = ap.parse_args(argv)
    df = measure(args.results_dir)
    cols = ["pooled_minus_mean", "start2_minus_start1", "smooth_gap", "smooth_gap_mean"]
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\nabsolute differences over", len(df), "settings (nats/token): ")
    print(df[cols].abs().describe().loc[["mean", "50%", "max"]].to_string(float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
