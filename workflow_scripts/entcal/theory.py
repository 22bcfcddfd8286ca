"""Section 3 of the paper: singleton mass under power-law data, and rank-frequency exponents.

Setting: m i.i.d. draws from p_i = i^(-alpha) / Z, i = 1..v. A "model" that stores counts and
samples from count/m emits an item seen exactly once (a singleton) with probability K_{m,1}/m,
where K_{m,1} is the number of singletons. Expectations (exact, a sum over items):

- ``k1_over_m_exact``: E[K_{m,1}] / m = sum_i p_i (1 - p_i)^(m-1)   (fraction of samples that are singletons);
- ``singleton_mass_exact``: E[sum_{i: N_i = 1} p_i] = sum_i p_i * m p_i (1 - p_i)^(m-1)
  (true probability mass of the items seen once; the paper's Figure 1, left).

For infinite v and alpha > 1 (Karlin 1967) E[K_{m,1}]/m ~ (1/alpha) c^(1/alpha) Gamma(1 - 1/alpha) m^(1/alpha - 1)
with c = 1/zeta(alpha): the scaling exponent is 1/alpha - 1 (0 for text-like alpha = 1, -1/3 for
code-like alpha = 1.5). The singleton mass scales with the same exponent.

Proposition 3.1 (simplified learning setting): a model fitted to m samples generates from its
count distribution and "derails" (switches to a distribution with higher entropy) once it emits
a singleton. With per-step singleton probability q = K_{m,1}/m, the probability of having derailed
by step t is 1 - (1 - q)^t, so miscalibration over T steps grows with q.

Rank-frequency fits: log frequency vs log rank of the top ``top`` types, alpha = -slope (OLS,
statsmodels, with a 95% CI), and the maximum-likelihood exponent of a discrete power law on ranks
1..top: p(r) = r^(-alpha) / H(top, alpha), with H the generalised harmonic number.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import optimize, special

from entcal.files import read_parquet

log = logging.getLogger(__name__)


def zipf_probs(alpha: float, v: int) -> np.ndarray:
    """p_i = i^(-alpha) / Z over i = 1..v (float64)."""
    w = np.arange(1, v + 1, dtype=np.float64) ** -alpha
    return w / w.sum()


def k1_over_m_exact(p: np.ndarray, m: int) -> float:
    """E[K_{m,1}] / m = sum_i p_i (1 - p_i)^(m - 1)."""
    return float(np.sum(p * np.exp((m - 1) * np.log1p(-p))))


def singleton_mass_exact(p: np.ndarray, m: int) -> float:
    """E[true mass of items seen exactly once] = sum_i p_i * m p_i (1 - p_i)^(m - 1)."""
    return float(np.sum(m * p * p * np.exp((m - 1) * np.log1p(-p))))


def karlin_k1_over_m(alpha: float, m: np.ndarray) -> np.ndarray:
    """Infinite-v asymptote of E[K_{m,1}]/m for alpha > 1 (Karlin 1967, eq. 23)."""
    c = 1.0 / special.zeta(alpha)
    return (1 / alpha) * c ** (1 / alpha) * special.gamma(1 - 1 / alpha) * np.asarray(m, float) ** (1 / alpha - 1)


def singleton_mc(p: np.ndarray, m: int, reps: int, rng: np.random.Generator) -> dict:
    """Monte Carlo over ``reps`` training sets of size m: singleton mass and K_1/m, mean and s.e."""
    mass, frac = np.empty(reps), np.empty(reps)
    for r in range(reps):
        ones = rng.multinomial(m, p) == 1
        mass[r] = p[ones].sum()
        frac[r] = ones.sum() / m
    se = lambda x: x.std(ddof=1) / np.sqrt(reps)  # noqa: E731
    return {
        "singleton_mass_mc": mass.mean(),
        "singleton_mass_mc_se": se(mass),
        "k1_over_m_mc": frac.mean(),
        "k1_over_m_mc_se": se(frac),
    }


def singleton_table(alphas: list[float], v: int, ms: list[int], reps: int, seed: int) -> pd.DataFrame:
    """Columns: alpha, v, m, singleton_mass_exact, singleton_mass_mc, singleton_mass_mc_se,
    k1_over_m_exact, k1_over_m_mc, k1_over_m_mc_se, k1_over_m_karlin (NaN for alpha <= 1)."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in alphas:
        p = zipf_probs(a, v)
        for m in ms:
            rows.append(
                {
                    "alpha": a,
                    "v": v,
                    "m": int(m),
                    "singleton_mass_exact": singleton_mass_exact(p, m),
                    **singleton_mc(p, int(m), reps, rng),
                    "k1_over_m_exact": k1_over_m_exact(p, m),
                    "k1_over_m_karlin": float(karlin_k1_over_m(a, m)) if a > 1 else np.nan,
                }
            )
    cols = [
        "alpha",
        "v",
        "m",
        "singleton_mass_exact",
        "singleton_mass_mc",
        "singleton_mass_mc_se",
        "k1_over_m_exact",
        "k1_over_m_mc",
        "k1_over_m_mc_se",
        "k1_over_m_karlin",
    ]
    return pd.DataFrame(rows)[cols]


def loglog_slope(x: np.ndarray, y: np.ndarray) -> dict:
    """OLS slope of log y on log x with its 95% CI."""
    res = sm.OLS(np.log(np.asarray(y, float)), sm.add_constant(np.log(np.asarray(x, float)))).fit()
    lo, hi = res.conf_int(0.05)[1]
    return {"slope": res.params[1], "slope_ci_low": lo, "slope_ci_high": hi, "intercept": res.params[0], "n": len(x)}


def singleton_slopes(table: pd.DataFrame, m_min: int, max_frac: float = 1 / 3) -> pd.DataFrame:
    """Per alpha: slope of the exact curves over m_min <= m <= max_frac * v (the paper's linear region)."""
    rows = []
    for a, g in table.groupby("alpha"):
        v = int(g["v"].iloc[0])
        g = g[(g["m"] >= m_min) & (g["m"] <= max_frac * v)]
        for col in ("singleton_mass_exact", "k1_over_m_exact"):
            rows.append(
                {
                    "alpha": a,
                    "v": v,
                    "quantity": col,
                    "m_min": int(g["m"].min()),
                    "m_max": int(g["m"].max()),
                    **loglog_slope(g["m"], g[col]),
                    "asymptotic_slope": 1 / a - 1,
                }
            )
    return pd.DataFrame(rows)


def derail_simulation(alpha: float, v: int, m: int, steps: int, n_seq: int, rng: np.random.Generator) -> dict:
    """Proposition 3.1's setting, simulated.

    Fit counts on m draws from Zipf(alpha, v); generate ``n_seq`` sequences of ``steps`` tokens
    from the fitted distribution count/m; a sequence derails at its first singleton. Returns the
    measured per-step singleton probability and derailed fraction at the last step, with the
    predictions from this training set's q = K_1/m and from the expectation E[K_1]/m.
    """
    p = zipf_probs(alpha, v)
    counts = rng.multinomial(m, p)
    q_fit = float((counts == 1).sum() / m)
    tokens = rng.choice(v, size=(n_seq, steps), p=counts / m)
    singleton = counts[tokens] == 1
    derailed_by = np.cumsum(singleton, axis=1) > 0
    t = np.arange(1, steps + 1)
    return {
        "alpha": alpha,
        "v": v,
        "m": m,
        "steps": steps,
        "n_seq": n_seq,
        "q_expected": k1_over_m_exact(p, m),
        "q_fitted_model": q_fit,
        "q_simulated": float(singleton.mean()),
        "q_simulated_se": float(singleton.mean(axis=1).std(ddof=1) / np.sqrt(n_seq)),
        "derailed_final_simulated": float(derailed_by[:, -1].mean()),
        "derailed_final_predicted": float(1 - (1 - q_fit) ** steps),
        "derail_curve_max_abs_error": float(np.max(np.abs(derailed_by.mean(0) - (1 - (1 - q_fit) ** t)))),
    }


# ---------------------------------------------------------------- rank-frequency exponents


def word_counts(texts) -> Counter:
    """Whitespace-separated word counts (the paper's unigram unit)."""
    c = Counter()
    for t in texts:
        c.update(t.split())
    return c


def rank_frequency(counts) -> np.ndarray:
    """Frequencies sorted in decreasing order (rank 1 first)."""
    f = np.fromiter(counts.values() if hasattr(counts, "values") else counts, dtype=np.float64)
    return np.sort(f)[::-1]


def alpha_ols(freqs: np.ndarray, top: int) -> dict:
    """alpha = -slope of log f on log rank over the top ``top`` ranks (OLS; 95% CI)."""
    f = freqs[:top]
    fit = loglog_slope(np.arange(1, len(f) + 1), f)
    return {
        "alpha_ols": -fit["slope"],
        "alpha_ols_ci_low": -fit["slope_ci_high"],
        "alpha_ols_ci_high": -fit["slope_ci_low"],
    }


def alpha_mle(freqs: np.ndarray, top: int) -> dict:
    """MLE of alpha for ranks r ~ r^(-alpha) / H(top, alpha), fitted on the tokens of the top ranks.

    The standard error comes from the observed Fisher information (the variance of log r under
    the fitted law, times the number of tokens).
    """
    f = freqs[:top].astype(np.float64)
    r = np.arange(1, len(f) + 1, dtype=np.float64)
    logr, n = np.log(r), f.sum()
    s_logr = float((f * logr).sum())

    def nll(a):
        return a * s_logr + n * special.logsumexp(-a * logr)

    res = optimize.minimize_scalar(nll, bounds=(0.05, 5.0), method="bounded", options={"xatol": 1e-8})
    a = res.x
    w = np.exp(-a * logr - special.logsumexp(-a * logr))
    var = float((w * logr**2).sum() - (w * logr).sum() ** 2)
    return {"alpha_mle": a, "alpha_mle_se": 1 / np.sqrt(n * var)}


def power_law_row(freqs: np.ndarray, top: int) -> dict:
    ols, mle = alpha_ols(freqs, top), alpha_mle(freqs, top)
    return {
        **ols,
        **mle,
        "n_tokens": int(freqs.sum()),
        "n_types": int(len(freqs)),
        "top": int(min(top, len(freqs))),
        "predicted_exponent": 1 / ols["alpha_ols"] - 1,
        "predicted_exponent_mle": 1 / mle["alpha_mle"] - 1,
    }


def power_law_tables(docs: dict[str, str], token_ids: dict[str, str], top: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per dataset: word-level (and, where a trained tokenizer exists, token-level) exponents.

    ``docs``: dataset -> docs.parquet (every document counts); ``token_ids``: dataset -> .npy stream.
    Returns (power_law table, rank-frequency curves of the top ranks in long format:
    dataset, unit, rank, frequency).
    """

    rows, curves = [], []
    for name, path in docs.items():
        freqs = rank_frequency(word_counts(read_parquet(path, columns=["text"])["text"]))
        row = {"dataset": name, **power_law_row(freqs, top)}
        curves.append(
            pd.DataFrame(
                {
                    "dataset": name,
                    "unit": "word",
                    "rank": np.arange(1, min(top, len(freqs)) + 1),
                    "frequency": freqs[:top],
                }
            )
        )
        if name in token_ids:
            tf = rank_frequency(np.bincount(np.load(token_ids[name]).astype(np.int64)))
            tf = tf[tf > 0]
            tok = power_law_row(tf, top)
            row.update({f"{k}_token": v for k, v in tok.items()})
            curves.append(
                pd.DataFrame(
                    {
                        "dataset": name,
                        "unit": "token",
                        "rank": np.arange(1, min(top, len(tf)) + 1),
                        "frequency": tf[:top],
                    }
                )
            )
        rows.append(row)
        log.info("%s: %s", name, row)
    head = [
        "dataset",
        "alpha_ols",
        "alpha_ols_ci_low",
        "alpha_ols_ci_high",
        "alpha_mle",
        "alpha_mle_se",
        "predicted_exponent",
        "predicted_exponent_mle",
    ]
    table = pd.DataFrame(rows)
    return table[head + [c for c in table.columns if c not in head]], pd.concat(curves, ignore_index=True)


def m_grid(v: int, m_min: int, max_factor: float, n: int) -> list[int]:
    """Log-spaced training-set sizes from m_min to max_factor * v."""
    return sorted({int(round(x)) for x in np.geomspace(m_min, max_factor * v, n)})


def run_singleton_study(cfg: dict, seed: int, mass_out: str, slopes_out: str, prop_out: str) -> None:
    """Figure 1 (left) tables and the Proposition 3.1 check, from the ``theory`` config block."""
    ms = m_grid(cfg["v"], cfg["m_min"], cfg["m_max_factor"], cfg["n_m"])
    table = singleton_table(cfg["alphas"], cfg["v"], ms, cfg["mc_reps"], seed)
    table.to_csv(mass_out, index=False, float_format="%.8g")
    slopes = singleton_slopes(table, cfg["slope_m_min"], cfg["linear_max_frac"])
    slopes.to_csv(slopes_out, index=False, float_format="%.6g")
    log.info("slopes:\n%s", slopes.to_string())
    rng = np.random.default_rng(seed + 1)
    p31 = cfg["prop31"]
    prop = pd.DataFrame(
        [derail_simulation(a, p31["v"], m, p31["steps"], p31["n_seq"], rng) for a in cfg["alphas"] for m in p31["ms"]]
    )
    prop.to_csv(prop_out, index=False, float_format="%.6g")
    log.info("proposition 3.1:\n%s", prop.to_string())
