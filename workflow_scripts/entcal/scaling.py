"""Scaling fits: log EntCE against log model size, per family x dataset (paper Figure 2).

Model: log(EntCE) = slope * log(n_params) + intercept, ordinary least squares (statsmodels),
fitted on base models sampled ancestrally at temperature 1. The theory predicts
slope = 1/alpha - 1 for data whose rank-frequency exponent is alpha.

Where EntCE <= 0 the logarithm is undefined: such models are excluded from the fit and listed
in ``excluded`` (never dropped silently).

Two EntCE estimators (:mod:`entcal.aggregate`): ``mean`` (summary ``entce``: the mean over steps of per-step
means, the paper's formula) and ``pooled`` (``entce_pooled``: every live token weighs the same, the authors'
notebook). Both are fitted; ``analysis.estimator`` chooses the headline columns and the figures.

Uncertainty: the t-based 95% CI of the OLS slope treats each model as one noiseless point; the
bootstrap CI refits the slope on each bootstrap replicate of the models' EntCE (``entce_bootstrap.parquet``:
prompts resampled independently per model, EntCE recomputed exactly under the estimator from the replicate's
per-step sums); replicates where a model's EntCE <= 0 drop that model, and replicates with fewer than two
models left are skipped (``boot_valid`` counts the rest).

Output columns (``tables/scaling_fits.csv``): family, dataset, sampler, temperature, estimator (the headline
one), n (models fitted), slope, slope_se, slope_ci_low, slope_ci_high (95%, t-based; NaN when n < 3),
slope_boot_ci_low, slope_boot_ci_high (95% percentile bootstrap over prompts), boot_valid,
intercept, r2, n_excluded, excluded (";"-joined model names with EntCE <= 0), the same columns for each
estimator with the suffix ``_mean`` or ``_pooled``, and, when the theory table exists, alpha_ols and
predicted_exponent = 1/alpha - 1 of the dataset.

Context length (companion paper): the per-step reference log loss is loss as a function of context
position l = prompt tokens + step; :func:`context_fits` fits L(l) = L_inf + A l^(-beta) per model x
dataset by weighted nonlinear least squares (scipy), with 95% normal CIs from the covariance.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def fit_loglog(n_params: np.ndarray, entce: np.ndarray) -> dict:
    """OLS of log(entce) on log(n_params); inputs must be positive. Returns slope, CI, intercept, r2, n."""
    x = np.log(np.asarray(n_params, dtype=np.float64))
    y = np.log(np.asarray(entce, dtype=np.float64))
    n = len(x)
    out = {
        "n": n,
        "slope": np.nan,
        "slope_se": np.nan,
        "slope_ci_low": np.nan,
        "slope_ci_high": np.nan,
        "intercept": np.nan,
        "r2": np.nan,
    }
    if n < 2 or np.ptp(x) == 0:
        return out
    import statsmodels.api as sm  # here: the Snakefile imports this module (through aggregate) at every load

    res = sm.OLS(y, sm.add_constant(x)).fit()
    out.update(slope=res.params[1], intercept=res.params[0])
    if n >= 3:
        lo, hi = res.conf_int(0.05)[1]
        out.update(slope_se=res.bse[1], slope_ci_low=lo, slope_ci_high=hi, r2=res.rsquared)
    else:
        out.update(r2=1.0)
    return out


def base_selection(summary: pd.DataFrame, sampler: str = "ancestral", temperature: float = 1.0) -> pd.DataFrame:
    """Base models (no checkpoints) at one sampler setting: the points of a size-scaling fit."""
    keep = (summary["sampler"] == sampler) & np.isclose(summary["temperature"], temperature) & ~summary["instruct"]
    if "checkpoint_of" in summary:
        keep &= summary["checkpoint_of"].isna() | (summary["checkpoint_of"] == "")
    return summary[keep]


ESTIMATORS = {"mean": "entce", "pooled": "entce_pooled"}  # estimator -> its summary.csv column
FIT_COLUMNS = [
    "n",
    "slope",
    "slope_se",
    "slope_ci_low",
    "slope_ci_high",
    "slope_boot_ci_low",
    "slope_boot_ci_high",
    "boot_valid",
    "intercept",
    "r2",
    "n_excluded",
    "excluded",
]


# summary column -> its pooled twin: the headline under analysis.estimator (entcal.aggregate.headline_columns,
# with_estimator)
HEADLINE = {
    "entce": "entce_pooled",
    "entce_se": "entce_pooled_se",
    "entropy_mean": "entropy_pooled",
    "logloss_mean": "logloss_pooled",
    "tf_entropy_mean": "tf_entropy_pooled",
    "gen_minus_tf": "gen_minus_tf_pooled",
    "tf_minus_logloss": "tf_minus_logloss_pooled",
}


def with_estimator(summary: pd.DataFrame, estimator: str = "mean") -> pd.DataFrame:
    """``summary`` whose entce, entropy_mean and logloss_mean are those of ``estimator`` (the figures' view)."""
    if estimator == "mean":
        return summary
    out = summary.copy()
    for col, twin in HEADLINE.items():  # the split and the standard error follow the estimator too
        if twin in out:
            out[col] = out[twin]
    return out


def bootstrap_slope(n_params: np.ndarray, replicates: list[np.ndarray]) -> dict:
    """Percentile CI of the log-log slope over bootstrap replicates: ``replicates[k][b]`` is model k's EntCE in
    replicate b (prompts resampled per model, :func:`entcal.curves.bootstrap_entce`)."""
    x = np.log(np.asarray(n_params, dtype=np.float64))
    n_boot = min((len(r) for r in replicates), default=0)
    slopes = []
    for b in range(n_boot):
        e = np.array([r[b] for r in replicates])
        ok = e > 0
        if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
            slopes.append(np.polyfit(x[ok], np.log(e[ok]), 1)[0])
    if not n_boot or len(slopes) < max(20, n_boot // 10):
        return {"slope_boot_ci_low": np.nan, "slope_boot_ci_high": np.nan, "boot_valid": len(slopes)}
    lo, hi = np.percentile(slopes, [2.5, 97.5])
    return {"slope_boot_ci_low": lo, "slope_boot_ci_high": hi, "boot_valid": len(slopes)}


def _fit(g: pd.DataFrame, column: str, boot: pd.DataFrame | None, estimator: str, label: str) -> dict:
    bad, ok = g[~(g[column] > 0)], g[g[column] > 0]
    if len(bad):
        log.warning(
            "%s: EntCE (%s) <= 0 for %s, excluded from the log-log fit", label, estimator, ", ".join(bad["model"])
        )
    b = {"slope_boot_ci_low": np.nan, "slope_boot_ci_high": np.nan, "boot_valid": 0}
    if boot is not None and len(g) >= 2:
        reps = [
            boot.loc[boot["model"] == m].sort_values("replicate")[f"entce_{estimator}"].to_numpy() for m in g["model"]
        ]
        if all(len(r) for r in reps):
            b = bootstrap_slope(g["n_params"].to_numpy(), reps)
    return {
        **fit_loglog(ok["n_params"].to_numpy(), ok[column].to_numpy()),
        **b,
        "n_excluded": len(bad),
        "excluded": ";".join(bad["model"]),
    }


def with_size_axis(summary: pd.DataFrame, size_axis: str = "counted") -> pd.DataFrame:
    """``summary`` whose ``n_params`` is the size axis ``size_axis`` (``analysis.size_axis``): ``counted`` as it is,
    ``nominal`` the size in each model's name (``n_params_nominal``) where the model has one."""
    if size_axis == "counted" or "n_params_nominal" not in summary:
        return summary
    out = summary.copy()
    nominal = pd.to_numeric(out["n_params_nominal"], errors="coerce")
    out["n_params"] = nominal.where(nominal.notna(), out["n_params"])
    return out


def scaling_fits(
    summary: pd.DataFrame,
    bootstrap: pd.DataFrame | None = None,
    power_law: pd.DataFrame | None = None,
    sampler: str = "ancestral",
    temperature: float = 1.0,
    estimator: str = "mean",
    size_axis: str = "counted",
) -> pd.DataFrame:
    """One fit per family x dataset over base models at the given sampler setting, under both estimators; the
    unsuffixed columns are ``estimator``'s. ``bootstrap``: entce_bootstrap.parquet (None: no bootstrap CI).
    ``size_axis``: the x axis (:func:`with_size_axis`), recorded in the ``size_axis`` column."""
    sel = base_selection(with_size_axis(summary, size_axis), sampler, temperature)
    rows = []
    for (family, dataset), g in sel.groupby(["family", "dataset"], sort=True):
        boot = None
        if bootstrap is not None:
            boot = bootstrap[
                (bootstrap["dataset"] == dataset)
                & (bootstrap["sampler"] == sampler)
                & np.isclose(bootstrap["temperature"], temperature)
            ]
        row = {
            "family": family,
            "dataset": dataset,
            "sampler": sampler,
            "temperature": temperature,
            "estimator": estimator,
            "size_axis": size_axis,
        }
        for est, column in ESTIMATORS.items():
            if column not in g:  # a summary without this estimator's column (older runs): nothing to fit
                continue
            fit = _fit(g, column, boot, est, f"{family}/{dataset}")
            row.update({f"{k}_{est}": v for k, v in fit.items()})
            if est == estimator:
                row.update(fit)
        rows.append(row)
    cols = [
        "family",
        "dataset",
        "sampler",
        "temperature",
        "estimator",
        "size_axis",
        *FIT_COLUMNS,
        *[f"{k}_{e}" for e in ESTIMATORS for k in FIT_COLUMNS],
    ]
    fits = pd.DataFrame(rows, columns=cols)
    if power_law is not None:
        fits = fits.merge(power_law[["dataset", "alpha_ols", "predicted_exponent"]], on="dataset", how="left")
    return fits


def write_scaling_fits(
    summary_csv: str,
    out_csv: str,
    bootstrap: str | None = None,
    power_law: str | None = None,
    estimator: str = "mean",
    size_axis: str = "counted",
) -> None:
    fits = scaling_fits(
        pd.read_csv(summary_csv),
        pd.read_parquet(bootstrap) if bootstrap else None,
        pd.read_csv(power_law) if power_law else None,
        estimator=estimator,
        size_axis=size_axis,
    )
    fits.to_csv(out_csv, index=False, float_format="%.6g")
    log.info("fits:\n%s", fits.to_string())


def power_law_curve(l, L_inf, A, beta):
    return L_inf + A * np.power(l, -beta)


def context_fits(
    per_step: pd.DataFrame,
    prompt_lens: dict[tuple[str, str], float],
    sampler: str = "ancestral",
    temperature: float = 1.0,
    reference_start: int = 1,
) -> pd.DataFrame:
    """L(l) = L_inf + A l^(-beta) on the per-step reference log loss, per model x dataset.

    ``l`` is the context the model saw before the reference token of each step: the prompt as it was fed (BOS,
    a chat template or instruction, the window: ``prompt_lens[(model, dataset)]``, the mean ``prompt_len`` of the
    prompts file), then the reference tokens before it. Step t's token is reference token t + reference_start - 1,
    so l = prompt_len + t + reference_start - 2.

    Columns: model, dataset, mean_prompt_len, L_inf, L_inf_ci_low, L_inf_ci_high, A, beta, beta_ci_low, beta_ci_high,
    n_points, converged (False when the fit failed or its covariance is undefined), beta_at_bound
    (beta ended on its bound [0.001, 5]: the curve is too flat or too short to identify the exponent).
    """
    sel = per_step[(per_step["sampler"] == sampler) & np.isclose(per_step["temperature"], temperature)]
    from scipy import optimize, stats

    z = stats.norm.ppf(0.975)
    rows = []
    for (model, dataset), g in sel.groupby(["model", "dataset"], sort=True):
        g = g[np.isfinite(g["logloss_mean"]) & (g["logloss_n"] > 1)]
        plen = float(prompt_lens[(model, dataset)])
        l = plen + g["step"].to_numpy(float) + reference_start - 2
        y = g["logloss_mean"].to_numpy()
        sigma = np.where(g["logloss_se"] > 0, g["logloss_se"], np.nan)
        sigma = np.nan_to_num(sigma, nan=np.nanmedian(sigma) if np.isfinite(sigma).any() else 1.0)
        row = {"model": model, "dataset": dataset, "mean_prompt_len": plen, "n_points": len(g)}
        try:
            p, cov = optimize.curve_fit(
                power_law_curve,
                l,
                y,
                p0=[y.min() * 0.9, 1.0, 0.5],
                sigma=sigma,
                absolute_sigma=True,
                bounds=([0, -np.inf, 1e-3], [np.inf, np.inf, 5]),
                maxfev=20000,
            )
            se = np.sqrt(np.diag(cov))
            row.update(
                L_inf=p[0],
                L_inf_ci_low=p[0] - z * se[0],
                L_inf_ci_high=p[0] + z * se[0],
                A=p[1],
                beta=p[2],
                beta_ci_low=p[2] - z * se[2],
                beta_ci_high=p[2] + z * se[2],
                converged=bool(np.all(np.isfinite(se))),
                beta_at_bound=bool(np.isclose(p[2], 1e-3) or np.isclose(p[2], 5.0)),
            )
        except (RuntimeError, ValueError) as err:
            log.warning("context fit %s/%s failed: %s", model, dataset, err)
            row.update(converged=False)
        rows.append(row)
    cols = [
        "model",
        "dataset",
        "mean_prompt_len",
        "L_inf",
        "L_inf_ci_low",
        "L_inf_ci_high",
        "A",
        "beta",
        "beta_ci_low",
        "beta_ci_high",
        "n_points",
        "converged",
        "beta_at_bound",
    ]
    return pd.DataFrame(rows).reindex(columns=cols)


def data_scaling_fits(summary: pd.DataFrame, estimator: str = "mean") -> pd.DataFrame:
    """log EntCE (under ``estimator``) on log training tokens per trained model x dataset, over its checkpoints
    and itself.

    Columns: model, dataset, estimator, n, slope, slope_se, slope_ci_low, slope_ci_high, intercept, r2,
    n_excluded, excluded (checkpoints with EntCE <= 0), tokens_min, tokens_max.
    """
    summary = with_estimator(summary, estimator)
    sel = summary[
        (summary["sampler"] == "ancestral") & np.isclose(summary["temperature"], 1.0) & summary["train_tokens"].notna()
    ].copy()
    sel["family_model"] = sel["checkpoint_of"].fillna("").where(sel["checkpoint_of"].fillna("") != "", sel["model"])
    rows = []
    for (model, dataset), g in sel.groupby(["family_model", "dataset"], sort=True):
        if len(g) < 2:
            continue
        ok, bad = g[g["entce"] > 0], g[~(g["entce"] > 0)]
        rows.append(
            {
                "model": model,
                "dataset": dataset,
                "estimator": estimator,
                **fit_loglog(ok["train_tokens"].to_numpy(), ok["entce"].to_numpy()),
                "n_excluded": len(bad),
                "excluded": ";".join(bad["model"]),
                "tokens_min": int(g["train_tokens"].min()),
                "tokens_max": int(g["train_tokens"].max()),
            }
        )
    cols = [
        "model",
        "dataset",
        "estimator",
        "n",
        "slope",
        "slope_se",
        "slope_ci_low",
        "slope_ci_high",
        "intercept",
        "r2",
        "n_excluded",
        "excluded",
        "tokens_min",
        "tokens_max",
    ]
    return pd.DataFrame(rows, columns=cols)
