"""The tables of calibrated sampling: the predictor's variants against their baselines and noise ceiling, each
method's calibrated point (where EntCE = 0), and the trade-off of log loss for entropy."""

from __future__ import annotations

import numpy as np
import pandas as pd


def equal_entropy_logloss(temps: pd.DataFrame, entropy: float) -> float:
    """Log loss of plain temperature sampling at the given generation entropy: linear interpolation
    between the model's temperature settings (NaN outside their range: no extrapolation)."""
    t = temps.sort_values("entropy_mean")
    x, y = t["entropy_mean"].to_numpy(), t["logloss_mean"].to_numpy()
    if len(t) < 2 or not (x[0] <= entropy <= x[-1]):
        return float("nan")
    return float(np.interp(entropy, x, y))


def predictor_variants(predictors: list[dict]) -> pd.DataFrame:
    """One row per calibrated model x dataset x predictor, on the same held-out labels: the head the samplers
    use (``head``), the variants of ``calibration.variants``, and the baselines (``constant``,
    ``onestep_linear``: a linear map of the exact one-step lookahead) with the noise ceiling beside them."""
    rows = []
    for p in predictors:
        m = p["metrics"]
        shared = {"model": p["model"], "dataset": p["dataset"], "noise_ceiling_r2": m.get("noise_ceiling_r2")}
        heads = p.get("variants") or [
            {"variant": "head", **{k: m.get(k) for k in ("n_train", "n_test", "r2_test", "rmse_test")}}
        ]
        for v in heads:
            rows.append(
                {
                    **shared,
                    "predictor": v["variant"],
                    "r2_test": v["r2_test"],
                    "r2_test_ci_low": v.get("r2_test_ci_low"),
                    "r2_test_ci_high": v.get("r2_test_ci_high"),
                    "rmse_test": v["rmse_test"],
                    "n_train": v["n_train"],
                    "n_test": v["n_test"],
                }
            )
        rows.append(
            {
                **shared,
                "predictor": "constant",
                "r2_test": m.get("r2_constant", np.nan),
                "rmse_test": m["rmse_constant"],
                "n_train": m["n_train"],
                "n_test": m["n_test"],
            }
        )
        rows.append(
            {
                **shared,
                "predictor": "onestep_linear",
                "r2_test": m["r2_onestep_linear"],
                "r2_test_ci_low": m.get("r2_onestep_linear_ci_low"),
                "r2_test_ci_high": m.get("r2_onestep_linear_ci_high"),
                "rmse_test": m["rmse_onestep_linear"],
                "n_train": m["n_train"],
                "n_test": m["n_test"],
            }
        )
    cols = [
        "model",
        "dataset",
        "predictor",
        "r2_test",
        "r2_test_ci_low",
        "r2_test_ci_high",
        "rmse_test",
        "n_train",
        "n_test",
        "noise_ceiling_r2",
    ]
    return pd.DataFrame(rows, columns=cols)


def calibration_tables(summary: pd.DataFrame, predictors: list[dict], tradeoffs: list[pd.DataFrame]):
    """(calibration table, predictor table, teacher-forced trade-off table); columns in docs/outputs.md."""
    pred_rows = []
    for p in predictors:
        row = {
            "model": p["model"],
            "dataset": p["dataset"],
            **p["metrics"],
            "train_loss_first": p["train_loss_first"],
            "train_loss_last": p["train_loss_last"],
            "n_val": p.get("n_val"),
            "best_step": p.get("best_step"),
            "horizon": p["horizon"],
            "candidates": p["candidates"],
            "label_mean": p["label_mu"],
            "label_forward_tokens": p["label_forward_tokens"],
            "fit_tokens": p["fit_tokens"],
            "fit_positions": p["fit_positions"],
            "mirostat_target": p["mirostat_target"],
        }
        for s, buckets in p["alpha"].items():
            row[f"alpha_{s}"] = ";".join(f"{b['alpha']:.4g}" for b in buckets)
            n = np.array([b["n"] for b in buckets], float)
            gain = np.array([(b["logloss_base"] - b["logloss"]) if b["n"] else 0.0 for b in buckets])
            row[f"fit_logloss_gain_{s}"] = float(np.sum(n * gain) / max(n.sum(), 1))
        for s, e in p.get("equal_entropy_tf", {}).items():
            row[f"tf_entropy_{s}"], row[f"tf_logloss_{s}"] = e["entropy"], e["logloss"]
            row[f"tf_temperature_{s}"], row[f"tf_logloss_temperature_{s}"] = e["temperature"], e["temperature_logloss"]
            row[f"tf_delta_logloss_{s}"] = e["delta_logloss"]
        pred_rows.append(row)
    pred = pd.DataFrame(pred_rows)
    by = {(p["model"], p["dataset"]): p for p in predictors}
    s = summary[summary["model"].isin({p["model"] for p in predictors}) & summary["checkpoint_of"].isna()].copy()
    cols = [
        "model",
        "dataset",
        "n_params",
        "sampler",
        "sampler_param",
        "temperature",
        "entropy_mean",
        "logloss_mean",
        "entce",
        "entce_se",
        "tf_entropy_mean",
        "gen_minus_tf",
        "tf_minus_logloss",
    ]
    out = []
    for (m, d), g in s.groupby(["model", "dataset"]):
        temps = g[g["sampler"] == "ancestral"]
        p = by.get((m, d), {})
        for r in g.itertuples():
            row = {c: getattr(r, c) for c in cols}
            gen_tokens = r.mean_gen_tokens * r.n_prompts
            row["forward_tokens_per_generated_token"] = getattr(r, "gen_forward_tokens", np.nan) / gen_tokens
            fit, k = p.get("fit_tokens", 0), p.get("candidates", 0)
            row["setup_forward_tokens"] = {  # one-off: labels, the alpha fit, the Mirostat target
                "future_entropy": p.get("label_forward_tokens", 0) + fit,
                "one_step_lookahead": fit * (1 + k),
                "mirostat": fit,
            }.get(r.sampler, 0)
            ll_t = equal_entropy_logloss(temps, r.entropy_mean)
            row["logloss_temperature_at_equal_entropy"] = ll_t
            row["delta_logloss_vs_temperature"] = r.logloss_mean - ll_t
            out.append(row)
    table = pd.DataFrame(out)
    tr = pd.concat(tradeoffs, ignore_index=True) if tradeoffs else pd.DataFrame()
    if not tr.empty:
        tr = tr[["model", "dataset", *[c for c in tr.columns if c not in ("model", "dataset")]]]
    return table, pred, tr
