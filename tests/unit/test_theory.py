"""Section 3 theory: exact expectations vs Monte Carlo and closed forms; exponent estimators."""

import numpy as np
import pytest

from entcal.theory import (
    alpha_mle,
    alpha_ols,
    derail_simulation,
    k1_over_m_exact,
    karlin_k1_over_m,
    m_grid,
    rank_frequency,
    singleton_mass_exact,
    singleton_mc,
    singleton_slopes,
    singleton_table,
    zipf_probs,
)


def test_uniform_law_closed_forms():
    v, m = 50, 70  # alpha = 0 is the uniform law: E[K1]/m = (1 - 1/v)^(m-1)
    p = zipf_probs(0.0, v)
    assert k1_over_m_exact(p, m) == pytest.approx((1 - 1 / v) ** (m - 1), rel=1e-12)
    assert singleton_mass_exact(p, m) == pytest.approx(m / v * (1 - 1 / v) ** (m - 1), rel=1e-12)


@pytest.mark.parametrize("alpha,v,m", [(1.0, 1000, 50), (1.25, 5000, 2000), (1.5, 20000, 100000)])
def test_exact_expectation_agrees_with_monte_carlo(alpha, v, m):
    p = zipf_probs(alpha, v)
    mc = singleton_mc(p, m, reps=400, rng=np.random.default_rng(0))
    assert abs(mc["singleton_mass_mc"] - singleton_mass_exact(p, m)) < 4 * mc["singleton_mass_mc_se"]
    assert abs(mc["k1_over_m_mc"] - k1_over_m_exact(p, m)) < 4 * mc["k1_over_m_mc_se"]


def test_karlin_asymptote_for_large_v():
    p = zipf_probs(1.5, 2_000_000)
    for m in (10_000, 100_000):
        assert k1_over_m_exact(p, m) / karlin_k1_over_m(1.5, m) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("alpha", [1.0, 1.25, 1.5])
def test_linear_region_slope_is_the_asymptotic_exponent(alpha):
    v = 1_000_000
    table = singleton_table([alpha], v, m_grid(v, 100, 0.34, 12), reps=2, seed=0)
    s = singleton_slopes(table, m_min=100).set_index("quantity")
    # the true singleton mass: within 0.01 of 1/alpha - 1
    assert s.loc["singleton_mass_exact", "slope"] == pytest.approx(1 / alpha - 1, abs=0.01)
    # the singleton fraction K1/m: slightly steeper than the asymptote, as the paper notes
    k = s.loc["k1_over_m_exact", "slope"]
    assert 1 / alpha - 1 - 0.2 < k <= 1 / alpha - 1 + 1e-9


@pytest.mark.parametrize("alpha", [1.0, 1.3, 1.6])
def test_exponent_estimators_recover_zipf_alpha(alpha):
    rng = np.random.default_rng(int(alpha * 10))
    counts = rng.multinomial(3_000_000, zipf_probs(alpha, 200_000))
    freqs = rank_frequency(counts[counts > 0])
    ols, mle = alpha_ols(freqs, 5000), alpha_mle(freqs, 5000)
    assert ols["alpha_ols"] == pytest.approx(alpha, abs=0.06)  # tail ranks flatten: OLS biased low
    assert mle["alpha_mle"] == pytest.approx(alpha, abs=0.01)
    assert ols["alpha_ols_ci_low"] < ols["alpha_ols"] < ols["alpha_ols_ci_high"]


def test_mle_matches_exact_truncated_zipf_expectations():
    # feed the *expected* counts of a truncated Zipf(1.2) over 300 ranks: the MLE must return 1.2
    f = zipf_probs(1.2, 300) * 1e6
    assert alpha_mle(f, 300)["alpha_mle"] == pytest.approx(1.2, abs=1e-6)
    # exact power law frequencies lie on a line: OLS recovers the exponent exactly
    assert alpha_ols(f, 300)["alpha_ols"] == pytest.approx(1.2, abs=1e-9)


@pytest.mark.parametrize("alpha,m", [(1.0, 2000), (1.5, 2000)])
def test_proposition_31_simulation_matches_its_prediction(alpha, m):
    r = derail_simulation(alpha, 5000, m, steps=30, n_seq=3000, rng=np.random.default_rng(1))
    assert abs(r["q_simulated"] - r["q_fitted_model"]) < 4 * r["q_simulated_se"]
    assert r["derail_curve_max_abs_error"] < 0.04
    assert r["q_fitted_model"] == pytest.approx(r["q_expected"], rel=0.25)
