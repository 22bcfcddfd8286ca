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

A method with one setting has no curve, hence no calibrated point. :func:`setting_comparison` compares every
setting with temperature at its own entropy instead: ``tables/calibration_settings.csv``, one row per
model x dataset x setting: model, dataset, setting, method, n_prompts, entropy, entropy_ci_low,
entropy_ci_high, logloss, logloss_ci_low, logloss_ci_high, entce, entce_ci_low, entce_ci_high,
temperature_logloss_at_entropy (temperature's curve, linear between its settings, at this setting's entropy;
empty outside their range), delta_vs_temperature_at_entropy (logloss minus that), delta_ci_low, delta_ci_high
(paired bootstrap; empty with the point), delta_boot_inside (share of replicates whose entropy lies inside
temperature's range),
forward_tokens_per_generated_token, n_boot, estimator.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

STUDY_COLUMNS = [
    "model",
    "dataset",
    "method",
    "n_settings",
    "n_prompts",
    "entce_min",
    "entce_max",
    "crosses",
    "setting_below",
    "setting_above",
    "entropy_at_calibration",
    "logloss_at_calibration",
    "logloss_ci_low",
    "logloss_ci_high",
    "delta_vs_temperature",
    "delta_ci_low",
    "delta_ci_high",
    "delta_boot_crosses",
    "forward_tokens_per_generated_token",
    "n_boot",
    "estimator",
]


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


SETTING_COLUMNS = [
    "model",
    "dataset",
    "setting",
    "method",
    "n_prompts",
    "entropy",
    "entropy_ci_low",
    "entropy_ci_high",
    "logloss",
    "logloss_ci_low",
    "logloss_ci_high",
    "entce",
    "entce_ci_low",
    "entce_ci_high",
    "temperature_logloss_at_entropy",
    "delta_vs_temperature_at_entropy",
    "delta_ci_low",
    "delta_ci_high",
    "delta_boot_inside",
    "forward_tokens_per_generated_token",
    "n_boot",
    "estimator",
]


def _boot_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) prompt weights of the percentile bootstrap: each row a resample of the n prompts."""
    rng = np.random.default_rng(seed)
    return (
        np.stack([np.bincount(rng.integers(0, n, n), minlength=n) / n for _ in range(n_boot)])
        if n_boot
        else np.zeros((0, n))
    )


def _boot_crossings(H: np.ndarray, L: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """L* per bootstrap replicate: ``H``, ``L`` (settings x prompts) of one method, prompts resampled."""
    return np.array([crossing(H @ w, L @ w)[1] for w in _boot_weights(H.shape[1], n_boot, seed)])


def _on_curve(h_curve: np.ndarray, l_curve: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The piecewise-linear curve through (h_curve, l_curve) at entropies ``h``; NaN outside its range."""
    o = np.argsort(h_curve, kind="stable")
    hc, lc = h_curve[o], l_curve[o]
    out = np.interp(h, hc, lc)
    return np.where((h >= hc[0]) & (h <= hc[-1]), out, np.nan) if len(hc) > 1 else np.full_like(h, np.nan, dtype=float)


def _cost(summary: pd.DataFrame) -> pd.DataFrame:
    if {"model", "dataset", "sampler", "gen_forward_tokens", "mean_gen_tokens", "n_prompts"} <= set(summary.columns):
        return summary.assign(fpt=summary["gen_forward_tokens"] / (summary["mean_gen_tokens"] * summary["n_prompts"]))
    return pd.DataFrame(columns=["model", "dataset", "sampler", "setting", "fpt"])


def _same_setting(rows: pd.DataFrame, key: pd.Series) -> np.ndarray:
    """Rows of summary.csv with the setting's temperature and sampler_param (both empty counts as equal)."""
    ok = np.ones(len(rows), bool)
    for col in ("temperature", "sampler_param"):
        if col in rows.columns and col in key.index:
            v, k = (
                pd.to_numeric(rows[col], errors="coerce").to_numpy(float),
                pd.to_numeric(pd.Series([key[col]]), errors="coerce")[0],
            )
            ok &= np.isclose(v, k) | (np.isnan(v) & np.isnan(k))
    return ok


def _wide(g: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-prompt means (settings x prompts), only the prompts every setting has."""
    wide_h = g.pivot_table(index="setting", columns="example_id", values="entropy_mean")
    wide_l = g.pivot_table(index="setting", columns="example_id", values="logloss_mean")
    keep = wide_h.columns[wide_h.notna().all() & wide_l.notna().all()]
    return wide_h[keep], wide_l[keep]


def _seed(seed: int, m: str, d: str) -> int:
    return seed + sum(map(ord, f"{m}/{d}"))


def setting_comparison(
    per_prompt: pd.DataFrame, summary: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """Every setting against temperature at its own generation entropy (columns: ``SETTING_COLUMNS``, the
    module docstring). The bootstrap draws are those of :func:`calibration_study` (same seed per model x
    dataset), so the two tables' intervals come from the same resampled prompts."""
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    cost = _cost(summary)
    rows = []

    def ci(x):
        ok = x[np.isfinite(x)]
        return (float(np.percentile(ok, lo)), float(np.percentile(ok, hi))) if len(ok) else (np.nan, np.nan)

    for (m, d), g in per_prompt.groupby(["model", "dataset"], sort=True):
        wide_h, wide_l = _wide(g)
        first = g.drop_duplicates("setting").set_index("setting")
        method_of = first["sampler"]
        H, L = wide_h.to_numpy(), wide_l.to_numpy()
        W = _boot_weights(H.shape[1], n_boot, _seed(seed, m, d))
        h, ll = H.mean(1), L.mean(1)
        hb, lb = W @ H.T, W @ L.T  # (n_boot, settings)
        temp = np.array([method_of[s] == "ancestral" for s in wide_h.index])
        t_at = _on_curve(h[temp], ll[temp], h) if temp.any() else np.full(len(h), np.nan)
        tb = (
            np.stack([_on_curve(hb[b, temp], lb[b, temp], hb[b]) for b in range(len(W))])
            if temp.any() and len(W)
            else np.full_like(hb, np.nan)
        )
        for j, s in enumerate(wide_h.index):
            c = cost[(cost["model"] == m) & (cost["dataset"] == d) & (cost["sampler"] == method_of[s])]
            c = c[_same_setting(c, first.loc[s])] if len(c) else c
            diff = lb[:, j] - tb[:, j]
            rows.append(
                {
                    "model": m,
                    "dataset": d,
                    "setting": s,
                    "method": method_of[s],
                    "n_prompts": H.shape[1],
                    "entropy": h[j],
                    **dict(zip(["entropy_ci_low", "entropy_ci_high"], ci(hb[:, j]))),
                    "logloss": ll[j],
                    **dict(zip(["logloss_ci_low", "logloss_ci_high"], ci(lb[:, j]))),
                    "entce": h[j] - ll[j],
                    **dict(zip(["entce_ci_low", "entce_ci_high"], ci(hb[:, j] - lb[:, j]))),
                    "temperature_logloss_at_entropy": t_at[j],
                    "delta_vs_temperature_at_entropy": ll[j] - t_at[j],
                    **dict(
                        zip(["delta_ci_low", "delta_ci_high"], ci(diff) if np.isfinite(t_at[j]) else (np.nan, np.nan))
                    ),
                    "delta_boot_inside": float(np.isfinite(diff).mean()) if len(W) else np.nan,
                    "forward_tokens_per_generated_token": float(c["fpt"].mean()) if len(c) else np.nan,
                    "n_boot": n_boot,
                    "estimator": "prompt_mean",
                }
            )
    return pd.DataFrame(rows, columns=SETTING_COLUMNS)


def calibration_study(
    per_prompt: pd.DataFrame, summary: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """The table of the module docstring. ``per_prompt``: rows of ``per_prompt.parquet`` (and its ``_extra``
    twin); ``summary``: rows of ``summary.csv`` (and ``summary_extra.csv``), for the forward-token cost."""
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    cost = _cost(summary)
    rows = []
    for (m, d), g in per_prompt.groupby(["model", "dataset"], sort=True):
        wide_h, wide_l = _wide(g)
        keep = wide_h.columns
        method_of = g.drop_duplicates("setting").set_index("setting")["sampler"]
        seed_md = _seed(seed, m, d)
        boots, points = {}, {}
        for method, settings in method_of.groupby(method_of):
            s = list(settings.index)
            H, L = wide_h.loc[s].to_numpy(), wide_l.loc[s].to_numpy()
            h, ll = H.mean(1), L.mean(1)
            hs, ls, i = crossing(h, ll)
            order = np.argsort(h, kind="stable")
            pos = int(np.where(order == i)[0][0]) if i >= 0 else -1
            points[method] = {
                "model": m,
                "dataset": d,
                "method": method,
                "n_settings": len(s),
                "n_prompts": len(keep),
                "entce_min": float((h - ll).min()),
                "entce_max": float((h - ll).max()),
                "crosses": i >= 0,
                "setting_below": s[order[pos]] if i >= 0 else "",
                "setting_above": s[order[pos + 1]] if 0 <= pos < len(s) - 1 else "",
                "entropy_at_calibration": hs,
                "logloss_at_calibration": ls,
            }
            boots[method] = _boot_crossings(H, L, n_boot, seed_md) if n_boot and len(s) > 1 else np.full(n_boot, np.nan)
            c = cost[(cost["model"] == m) & (cost["dataset"] == d) & (cost["sampler"] == method)]["fpt"]
            points[method]["forward_tokens_per_generated_token"] = float(c.mean()) if len(c) else float("nan")
        ref = points.get("ancestral", {}).get("logloss_at_calibration", np.nan)
        ref_b = boots.get("ancestral", np.full(n_boot, np.nan))
        ref_crosses = points.get("ancestral", {}).get("crosses", False)
        for method, row in points.items():
            b = boots[method]
            # no interval around a point that does not exist: where the method (or, for the difference, the
            # temperature sweep) never reaches EntCE = 0, the replicates that happen to cross say nothing of it
            ok = np.isfinite(b) & row["crosses"]
            diff = b - ref_b
            both = np.isfinite(diff) & row["crosses"] & ref_crosses
            row.update(
                {
                    "logloss_ci_low": float(np.percentile(b[ok], lo)) if ok.any() else np.nan,
                    "logloss_ci_high": float(np.percentile(b[ok], hi)) if ok.any() else np.nan,
                    "delta_vs_temperature": row["logloss_at_calibration"] - ref,
                    "delta_ci_low": float(np.percentile(diff[both], lo)) if both.any() else np.nan,
                    "delta_ci_high": float(np.percentile(diff[both], hi)) if both.any() else np.nan,
                    "delta_boot_crosses": float(both.mean()) if n_boot else np.nan,
                    "n_boot": n_boot,
                    "estimator": "prompt_mean",
                }
            )
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
            out.append(
                f"{m} / {d}: lowest log loss at EntCE = 0: {best['method']}, {best['logloss_at_calibration']:.4f} "
                f"nats [{best['logloss_ci_low']:.4f}, {best['logloss_ci_high']:.4f}] at entropy "
                f"{best['entropy_at_calibration']:.4f}."
            )
        else:
            out.append(
                f"{m} / {d}: lowest log loss at EntCE = 0: {best['method']}, {best['delta_vs_temperature']:+.4f} "
                f"nats against temperature [{best['delta_ci_low']:+.4f}, {best['delta_ci_high']:+.4f}], at "
                f"{best['forward_tokens_per_generated_token']:.2f} forward tokens per generated token."
            )
    return out


def setting_answer(table: pd.DataFrame) -> list[str]:
    """One line per setting that is not temperature: its log loss against temperature's at the same
    generation entropy, with the paired interval, and its EntCE."""
    out = []
    for r in table[table["method"] != "ancestral"].itertuples():
        where = (
            f"{r.delta_vs_temperature_at_entropy:+.4f} nats against temperature at its entropy "
            f"[{r.delta_ci_low:+.4f}, {r.delta_ci_high:+.4f}]"
            if np.isfinite(r.delta_vs_temperature_at_entropy)
            else "outside temperature's range of entropies"
        )
        out.append(
            f"{r.model} / {r.dataset} / {r.setting}: EntCE {r.entce:+.3f} [{r.entce_ci_low:+.3f}, "
            f"{r.entce_ci_high:+.3f}], log loss {where}."
        )
    return out
