"""The exact study of calibration methods on small Markov chains (the paper's theory tested where every quantity is
computable): Monte Carlo future-entropy labels against the exact ones, each method's calibrated point, the study a
configuration runs."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import optimize

from entcal.exact import (
    algorithm1,
    entce_root,
    evaluate,
    future_entropy,
    global_temperature,
    local_temperature,
    make_instance,
    per_step,
    prefix_gaps,
    row_entropy,
    sample_paths,
    top_p,
)

log = logging.getLogger(__name__)


def mc_label_samples(Q: np.ndarray, t: int, s: int, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n single-rollout label samples of F_t(s): summed surprisal and summed path entropy."""
    ys = sample_paths(Q, t, np.full(n, s), rng)
    T = Q.shape[0]
    states = np.concatenate([np.full((n, 1), s), ys[:, :-1]], axis=1)
    steps = np.arange(t, T)[None, :]
    surprisal = -np.log(Q[steps, states, ys]).sum(1)
    path_entropy = row_entropy(Q)[steps, states].sum(1)
    return {"surprisal": surprisal, "entropy_path": path_entropy}


def mc_label_study(Q: np.ndarray, t: int, s: int, ms: list[int], reps: int, seed: int) -> pd.DataFrame:
    """RMSE of the m-rollout mean of each estimator against the exact F_t(s), for each m."""
    rng = np.random.default_rng(seed)
    exact = future_entropy(Q)[t, s]
    rows = []
    for m in ms:
        draws = mc_label_samples(Q, t, s, m * reps, rng)
        for name, x in draws.items():
            means = x.reshape(reps, m).mean(1)
            rows.append(
                {
                    "m": m,
                    "estimator": name,
                    "exact": exact,
                    "mean": means.mean(),
                    "bias_se": means.std(ddof=1) / np.sqrt(reps),
                    "rmse": np.sqrt(np.mean((means - exact) ** 2)),
                    "single_rollout_var": x.var(ddof=1),
                }
            )
    return pd.DataFrame(rows)


def compare_methods(P_true: np.ndarray, P_hat: np.ndarray, eps: float, truncations: list[int]) -> dict:
    """Every method's adjusted model: {method: (Q, param, max |dL/da| or NaN)}."""
    V = P_hat.shape[2]
    ev = lambda Q: evaluate(Q, P_true)  # noqa: E731
    out = {"original": (P_hat, np.nan, np.nan)}
    tau0 = entce_root(lambda x: local_temperature(P_hat, x), 0.2, 5.0, P_true)
    out["local_temperature"] = (local_temperature(P_hat, tau0), tau0, np.nan)
    best = optimize.minimize_scalar(
        lambda x: ev(local_temperature(P_hat, x))["logloss"],
        bounds=(0.2, 5.0),
        method="bounded",
        options={"xatol": 1e-9},
    ).x
    out["local_temperature_min_logloss"] = (local_temperature(P_hat, best), best, np.nan)
    g = optimize.minimize_scalar(
        lambda x: ev(global_temperature(P_hat, x))["logloss"],
        bounds=(0.2, 5.0),
        method="bounded",
        options={"xatol": 1e-9},
    ).x
    out["global_temperature"] = (global_temperature(P_hat, g), g, np.nan)
    # truncation at matched entropy: the entropy of the EntCE-zero local temperature
    h0 = ev(out["local_temperature"][0])["entropy"]
    pp = entce_root(lambda x: top_p(P_hat, x), 0.05, 1.0, P_true, key="entropy", target=h0)
    out["top_p"] = (top_p(P_hat, pp), pp, np.nan)
    ks = [(abs(ev(_top_k(P_hat, k))["entropy"] - h0), k) for k in range(1, V + 1)]
    k = min(ks)[1]
    out["top_k"] = (_top_k(P_hat, k), k, np.nan)
    for k in truncations:
        Q, _, d = algorithm1(P_hat, P_true, eps, truncate=k)
        out["one_step_lookahead" if k == 1 else f"future_entropy_{k}step"] = (Q, k, np.abs(d).max())
    Q, a, d = algorithm1(P_hat, P_true, eps)
    out["future_entropy"] = (Q, np.nan, np.abs(d).max())
    return out


def _top_k(P: np.ndarray, k: int) -> np.ndarray:
    kth = -np.sort(-P, axis=-1)[..., k - 1 : k]
    Q = np.where(P >= kth, P, 0.0)
    return Q / Q.sum(-1, keepdims=True)


def run_exact_study(cfg: dict, seed: int, table_out: str, steps_out: str, noise_out: str, mc_out: str) -> None:
    """All tables of the exact study, from the ``exact`` config block."""
    rows, steps, noise = [], [], []
    for i in range(cfg["instances"]):
        P_true, P_hat = make_instance(
            cfg["vocab"], cfg["horizon"], cfg["n_train"], cfg["smoothing"], cfg["concentration"], seed + i
        )
        for method, (Q, param, grad) in compare_methods(P_true, P_hat, cfg["eps"], cfg["truncations"]).items():
            rows.append({"instance": i, "method": method, "param": param, **evaluate(Q, P_true), "max_abs_grad": grad})
            c = per_step(Q, P_true)
            steps.append(
                pd.DataFrame(
                    {
                        "instance": i,
                        "method": method,
                        "step": np.arange(1, len(c["entropy"]) + 1),
                        **c,
                        "prefix_gap": prefix_gaps(Q, P_true),
                    }
                )
            )
        rng = np.random.default_rng(seed + 1000 + i)
        for delta in cfg["deltas"]:
            for r in range(cfg["noise_reps"]):
                Q, _, _ = algorithm1(P_hat, P_true, cfg["eps"], noise=delta, rng=rng)
                e = evaluate(Q, P_true)
                noise.append(
                    {
                        "instance": i,
                        "delta": delta,
                        "rep": r,
                        "entce": e["entce"],
                        "abs_entce": abs(e["entce"]),
                        "logloss": e["logloss"],
                        "max_abs_prefix_gap": e["max_abs_prefix_gap"],
                    }
                )
    table = pd.DataFrame(rows)
    table.to_csv(table_out, index=False, float_format="%.8g")
    pd.concat(steps, ignore_index=True).to_csv(steps_out, index=False, float_format="%.8g")
    pd.DataFrame(noise).to_csv(noise_out, index=False, float_format="%.8g")
    P_true, P_hat = make_instance(
        cfg["vocab"], cfg["horizon"], cfg["n_train"], cfg["smoothing"], cfg["concentration"], seed
    )
    mc = mc_label_study(P_hat, 0, P_hat.shape[1] - 1, cfg["mc_ms"], cfg["mc_reps"], seed)
    mc.to_csv(mc_out, index=False, float_format="%.8g")
    log.info("exact study:\n%s", table.to_string())
    log.info("noise slope: %s", noise_slope(pd.DataFrame(noise)))


def noise_slope(noise: pd.DataFrame) -> float:
    """OLS slope of log mean |EntCE| on log delta (the theorem: |EntCE| = O(delta + eps))."""
    m = noise.groupby("delta")["abs_entce"].mean()
    return float(np.polyfit(np.log(m.index.to_numpy()), np.log(m.to_numpy()), 1)[0])
