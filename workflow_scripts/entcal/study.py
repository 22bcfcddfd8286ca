"""Which method is best at the entropy where the model is calibrated (EntCE = 0), with bootstrap intervals.

A *method* is a sampler (``ancestral`` = temperature, ``top_p``, ``min_p``, ``future_entropy``,
``one_step_lookahead``, ``mirostat``, ...). Its settings (temperatures, params, the fitted tilt) are points
(generation entropy H, reference log loss L) of one model x dataset. Sorted by H, the method's curve
crosses H = L (EntCE = 0) between two neighbouring settings whose EntCE differ in sign; linear
interpolation between them gives the method's **calibrated point** (H*, L*). The method with the lowest
L* calibrates the model at the least cost in log loss; ``delta_vs_temperature`` = L* - L*_temperature.

Estimator: the per-prompt means of ``per_prompt.parquet`` (one number per prompt and setting, every prompt
weighing the same), averaged over prompts. The bootstrap resamples prompts (the sampling unit) with the
same draw for every setting of a model x dataset (the settings share their prompts), recomputes every
point, and takes percentile intervals of L* and of the paired difference.

Columns of ``tables/calibration_study.csv`` (one row per model x dataset x method):
model, dataset, method, n_settings, n_prompts, entce_min, entce_max (over the method's settings),
crosses (EntCE changes sign along the method's settings), setting_below, setting_above (the settings
bracketing EntCE = 0), entropy_at_calibration, logloss_at_calibration, logloss_ci_low, logloss_ci_high,
delta_vs_temperature, delta_ci_low, delta_ci_high, delta_boot_crosses (share of replicates where both
curves cross), forward_tokens_per_generated_token (mean over the method's settings), n_boot,
estimator ("prompt_mean").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

STUDY_COLUMNS = ["model", "dataset", "method", "n_settings", "n_prompts", "entce_min", "entce_max", "crosses",
                 "setting_below", "setting_above", "entropy_at_calibration", "logloss_at_calibration",
                 "logloss_ci_low", "logloss_ci_high", "delta_vs_temperature", "delta_ci_low", "delta_ci_high",
                 "delta_boot_crosses", "forward_tokens_per_generated_token", "n_boot", "estimator"]  # fmt: skip


def crossing(h: np.ndarray, ll: np.ndarray) -> tuple[float, float, int]:
    """(H*, L*, i) where the piecewise-linear curve through (h, ll), sorted by h, first meets H = L, between
    points i and i + 1 (NaN, NaN, -1 when EntCE = h - ll keeps one sign). ``h``, ``ll``: 1-D, one per setting."""
    order = np.argsort(h, kind="stable")
    h, ll = np.asarray(h, float)[order], np.asarray(ll, float)[order]
    e = h - ll
    for i in range(len(e) - 1):
        if e[i] == 0:
            return float(h[i]), float(ll[i]), int(order[i])
        if e[i] * e[i + 1] < 0:
            t = e[i] / (e[i] - e[i + 1])
            return float(h[i] + t * (h[i + 1] - h[i])), float(ll[i] + t * (ll[i + 1] - ll[i])), int(order[i])
    if len(e) and e[-1] == 0:
        return float(h[-1]), float(ll[-1]), int(order[-1])
    return float("nan"), float("nan"), -1


def _boot_crossings(H: np.ndarray, L: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """L* per bootstrap replicate: ``H``, ``L`` (settings x prompts) of one method, prompts resampled."""
    rng = np.random.default_rng(seed)
    n = H.shape[1]
    out = np.full(n_boot, np.nan)
    for b in range(n_boot):
        w = np.bincount(rng.integers(0, n, n), minlength=n) / n
        out[b] = crossing(H @ w, L @ w)[1]
    return out


def calibration_study(per_prompt: pd.DataFrame, summary: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> pd.DataFrame:  # fmt: skip
    """The table of the module docstring. ``per_prompt``: rows of ``per_prompt.parquet`` (and its ``_extra``
    twin); ``summary``: rows of ``summary.csv`` (and ``summary_extra.csv``), for the forward-token cost."""
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    if {"model", "dataset", "sampler", "gen_forward_tokens", "mean_gen_tokens", "n_prompts"} <= set(summary.columns):
        cost = summary.assign(fpt=summary["gen_forward_tokens"] / (summary["mean_gen_tokens"] * summary["n_prompts"]))
    else:
        cost = pd.DataFrame(columns=["model", "dataset", "sampler", "fpt"])
    rows = []
    for (m, d), g in per_prompt.groupby(["model", "dataset"], sort=True):
        wide_h = g.pivot_table(index="setting", columns="example_id", values="entropy_mean")
        wide_l = g.pivot_table(index="setting", columns="example_id", values="logloss_mean")
        keep = wide_h.columns[wide_h.notna().all() & wide_l.notna().all()]  # prompts every setting has
        wide_h, wide_l = wide_h[keep], wide_l[keep]
        method_of = g.drop_duplicates("setting").set_index("setting")["sampler"]
        seed_md = seed + sum(map(ord, f"{m}/{d}"))
        boots, points = {}, {}
        for method, settings in method_of.groupby(method_of):
            s = list(settings.index)
            H, L = wide_h.loc[s].to_numpy(), wide_l.loc[s].to_numpy()
            h, ll = H.mean(1), L.mean(1)
            hs, ls, i = crossing(h, ll)
            order = np.argsort(h, kind="stable")
            pos = int(np.where(order == i)[0][0]) if i >= 0 else -1
            points[method] = {
                "model": m, "dataset": d, "method": method, "n_settings": len(s), "n_prompts": len(keep),
                "entce_min": float((h - ll).min()), "entce_max": float((h - ll).max()), "crosses": i >= 0,
                "setting_below": s[order[pos]] if i >= 0 else "",
                "setting_above": s[order[pos + 1]] if 0 <= pos < len(s) - 1 else "",
                "entropy_at_calibration": hs, "logloss_at_calibration": ls,
            }  # fmt: skip
            boots[method] = _boot_crossings(H, L, n_boot, seed_md) if n_boot and len(s) > 1 else np.full(n_boot, np.nan)
            c = cost[(cost["model"] == m) & (cost["dataset"] == d) & (cost["sampler"] == method)]["fpt"]
            points[method]["forward_tokens_per_generated_token"] = float(c.mean()) if len(c) else float("nan")
        ref = points.get("ancestral", {}).get("logloss_at_calibration", np.nan)
        ref_b = boots.get("ancestral", np.full(n_boot, np.nan))
        for method, row in points.items():
            b = boots[method]
            ok = np.isfinite(b)
            diff = b - ref_b
            both = np.isfinite(diff)
            row.update({
                "logloss_ci_low": float(np.percentile(b[ok], lo)) if ok.any() else np.nan,
                "logloss_ci_high": float(np.percentile(b[ok], hi)) if ok.any() else np.nan,
                "delta_vs_temperature": row["logloss_at_calibration"] - ref,
                "delta_ci_low": float(np.percentile(diff[both], lo)) if both.any() else np.nan,
                "delta_ci_high": float(np.percentile(diff[both], hi)) if both.any() else np.nan,
                "delta_boot_crosses": float(both.mean()) if n_boot else np.nan,
                "n_boot": n_boot, "estimator": "prompt_mean",
            })  # fmt: skip
            rows.append(row)
    return pd.DataFrame(rows, columns=STUDY_COLUMNS)


def answer(table: pd.DataFrame) -> list[str]:
    """One plain sentence per model x dataset: the method with the lowest log loss at EntCE = 0 and its
    difference from temperature with the interval, or why there is no answer."""
    out = []
    for (m, d), g in table.groupby(["model", "dataset"], sort=True):
        ok = g[g["crosses"]].sort_values("logloss_at_calibration")
        if ok.empty:
            out.append(f"{m} / {d}: no method's settings bracket EntCE = 0 (widen the sweeps).")
            continue
        best = ok.iloc[0]
        t = g[g["method"] == "ancestral"]
        if best["method"] == "ancestral" or t.empty or not t["crosses"].iloc[0]:
            out.append(f"{m} / {d}: lowest log loss at EntCE = 0: {best['method']}, {best['logloss_at_calibration']:.4f} "
                       f"nats [{best['logloss_ci_low']:.4f}, {best['logloss_ci_high']:.4f}] at entropy "
                       f"{best['entropy_at_calibration']:.4f}.")  # fmt: skip
        else:
            out.append(f"{m} / {d}: lowest log loss at EntCE = 0: {best['method']}, {best['delta_vs_temperature']:+.4f} "
                       f"nats against temperature [{best['delta_ci_low']:+.4f}, {best['delta_ci_high']:+.4f}], at "
                       f"{best['forward_tokens_per_generated_token']:.2f} forward tokens per generated token.")  # fmt: skip
    return out
