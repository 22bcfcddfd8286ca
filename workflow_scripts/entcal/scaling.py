"""Scaling fits: log EntCE against log model size, per family x dataset (paper Figure 2).

Model: log(EntCE) = slope * log(n_params) + intercept, ordinary least squares (statsmodels),
fitted on base models sampled ancestrally at temperature 1. The theory predicts
slope = 1/alpha - 1 for data whose rank-frequency exponent is alpha.

Where EntCE <= 0 the logarithm is undefined: such models are excluded from the fit and listed
in ``excluded`` (never dropped silently).

Output columns (``tables/scaling_fits.csv``): family, dataset, sampler, temperature, n (models
fitted), slope, slope_se, slope_ci_low, slope_ci_high (95%, t-based; NaN when n < 3), intercept,
r2, n_excluded, excluded (";"-joined model names with EntCE <= 0).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import statsmodels.api as sm

log = logging.getLogger(__name__)


def fit_loglog(n_params: np.ndarray, entce: np.ndarray) -> dict:
    """OLS of log(entce) on log(n_params); inputs must be positive. Returns slope, CI, intercept, r2, n."""
    x = np.log(np.asarray(n_params, dtype=np.float64))
    y = np.log(np.asarray(entce, dtype=np.float64))
    n = len(x)
    out = {"n": n, "slope": np.nan, "slope_se": np.nan, "slope_ci_low": np.nan, "slope_ci_high": np.nan,
           "intercept": np.nan, "r2": np.nan}  # fmt: skip
    if n < 2 or np.ptp(x) == 0:
        return out
    res = sm.OLS(y, sm.add_constant(x)).fit()
    out.update(slope=res.params[1], intercept=res.params[0])
    if n >= 3:
        lo, hi = res.conf_int(0.05)[1]
        out.update(slope_se=res.bse[1], slope_ci_low=lo, slope_ci_high=hi, r2=res.rsquared)
    else:
        out.update(r2=1.0)
    return out


def scaling_fits(summary: pd.DataFrame, sampler: str = "ancestral", temperature: float = 1.0) -> pd.DataFrame:
    """One fit per family x dataset over base models at the given sampler setting."""
    sel = summary[
        (summary["sampler"] == sampler) & np.isclose(summary["temperature"], temperature) & ~summary["instruct"]
    ]
    rows = []
    for (family, dataset), g in sel.groupby(["family", "dataset"], sort=True):
        bad = g[~(g["entce"] > 0)]
        ok = g[g["entce"] > 0]
        if len(bad):
            log.warning("%s/%s: EntCE <= 0 for %s, excluded from the log-log fit", family, dataset,
                        ", ".join(bad["model"]))  # fmt: skip
        rows.append(
            {
                "family": family,
                "dataset": dataset,
                "sampler": sampler,
                "temperature": temperature,
                **fit_loglog(ok["n_params"].to_numpy(), ok["entce"].to_numpy()),
                "n_excluded": len(bad),
                "excluded": ";".join(bad["model"]),
            }
        )
    cols = ["family", "dataset", "sampler", "temperature", "n", "slope", "slope_se", "slope_ci_low",
            "slope_ci_high", "intercept", "r2", "n_excluded", "excluded"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def write_scaling_fits(summary_csv: str, out_csv: str) -> None:
    fits = scaling_fits(pd.read_csv(summary_csv))
    fits.to_csv(out_csv, index=False, float_format="%.6g")
    log.info("fits:\n%s", fits.to_string())
