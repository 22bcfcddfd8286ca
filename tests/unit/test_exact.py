"""The exact future-entropy study: DP vs brute force, Algorithm 1 and Theorem 5.2, MC labels."""

import numpy as np
import pytest

from entcal.exact import (
    adjust_with_alphas,
    algorithm1,
    brute_force,
    evaluate,
    future_entropy,
    future_logloss,
    global_temperature,
    local_temperature,
    make_instance,
    per_step,
    prefix_gaps,
    sequence_probs,
    state_marginals,
    top_p,
    truncated_future_entropy,
)
from entcal.exact_study import mc_label_samples


@pytest.fixture(params=[0, 1, 2])
def tiny(request):
    return make_instance(vocab=3, horizon=4, n_train=20, smoothing=1.0, concentration=0.4, seed=request.param)


def test_dp_matches_enumeration(tiny):
    P_true, P_hat = tiny
    for Q in (P_hat, local_temperature(P_hat, 0.7), adjust_with_alphas(P_hat, np.array([0.3, -0.2, 0.5, 1.0]))):
        b, c = brute_force(Q, P_true), per_step(Q, P_true)
        np.testing.assert_allclose(c["entropy"], b["entropy"], atol=1e-12)
        np.testing.assert_allclose(c["logloss"], b["logloss"], atol=1e-12)
        F = future_entropy(Q)
        assert F[0, -1] == pytest.approx(b["sequence_entropy"], abs=1e-12)  # chain rule
        assert future_logloss(Q, P_true)[0, -1] == pytest.approx(b["logloss"].sum(), abs=1e-12)
        assert truncated_future_entropy(Q, 0, 4)[-1] == pytest.approx(F[0, -1], abs=1e-12)
        assert truncated_future_entropy(Q, 1, 1)[:3] == pytest.approx(per_step_rows(Q, 1))


def per_step_rows(Q, t):
    return [-(Q[t, s] * np.log(Q[t, s])).sum() for s in range(Q.shape[2])]


@pytest.mark.parametrize("tau", [0.6, 1.0, 1.7])
def test_global_temperature_matches_brute_force(tiny, tau):
    _, P_hat = tiny
    probs = sequence_probs(P_hat)
    z = sum(p ** (1 / tau) for p in probs.values())
    got = sequence_probs(global_temperature(P_hat, tau))
    for y, p in probs.items():
        assert got[y] == pytest.approx(p ** (1 / tau) / z, rel=1e-10)


def test_truncation_and_temperature_limits(tiny):
    _, P_hat = tiny
    np.testing.assert_allclose(local_temperature(P_hat, 1.0), P_hat, atol=1e-14)
    np.testing.assert_allclose(top_p(P_hat, 1.0), P_hat, atol=1e-14)
    assert np.all((top_p(P_hat, 0.01) > 0).sum(-1) == 1)


def test_prefix_gap_recursion_holds_for_any_alphas(tiny):
    """G_t - G_{t+1} = -(1 + a_t) dL_t/da_t, the identity behind Theorem 5.2 (finite differences)."""
    P_true, P_hat = tiny
    a = np.array([0.4, -0.3, 0.8, 0.2])
    Q = adjust_with_alphas(P_hat, a)
    G = np.append(prefix_gaps(Q, P_true), 0.0)
    h = 1e-6
    for t in range(4):
        up, dn = a.copy(), a.copy()
        up[t] += h
        dn[t] -= h
        d = (
            per_step(adjust_with_alphas(P_hat, up), P_true)["logloss"][t]
            - per_step(adjust_with_alphas(P_hat, dn), P_true)["logloss"][t]
        ) / (2 * h)
        assert G[t] - G[t + 1] == pytest.approx(-(1 + a[t]) * d, abs=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_algorithm1_calibrates_without_raising_log_loss(seed):
    P_true, P_hat = make_instance(vocab=4, horizon=10, n_train=40, smoothing=1.0, concentration=0.3, seed=seed)
    eps = 1e-10
    Q, alphas, grads = algorithm1(P_hat, P_true, eps=eps)
    assert np.abs(grads).max() <= eps
    bound = np.cumsum(((1 + alphas) * eps)[::-1])[::-1]  # |G_t| <= sum_{u>=t} (1 + a_u) eps
    G = prefix_gaps(Q, P_true)
    assert np.all(np.abs(G) <= bound + 1e-12)
    e, o = evaluate(Q, P_true), evaluate(P_hat, P_true)
    assert abs(e["entce"]) < 1e-9 and abs(o["entce"]) > 1e-4
    assert e["logloss"] <= o["logloss"] + 1e-12
    steps_new, steps_old = per_step(Q, P_true)["logloss"], per_step(P_hat, P_true)["logloss"]
    assert np.all(steps_new <= steps_old + 1e-12)  # a_t = 0 is always available


def test_noisy_predictor_degrades_gracefully():
    P_true, P_hat = make_instance(vocab=4, horizon=10, n_train=40, smoothing=1.0, concentration=0.3, seed=0)
    rng = np.random.default_rng(0)
    small = np.mean(
        [abs(evaluate(algorithm1(P_hat, P_true, noise=0.01, rng=rng)[0], P_true)["entce"]) for _ in range(10)]
    )
    big = np.mean([abs(evaluate(algorithm1(P_hat, P_true, noise=0.1, rng=rng)[0], P_true)["entce"]) for _ in range(10)])
    assert 0 < small < big < 0.1


def test_monte_carlo_labels_are_unbiased_and_entropy_path_has_lower_variance():
    P_true, P_hat = make_instance(vocab=4, horizon=8, n_train=40, smoothing=1.0, concentration=0.3, seed=3)
    rng = np.random.default_rng(0)
    exact = future_entropy(P_hat)[2, 1]
    mu = state_marginals(P_hat)
    assert mu[2, 1] > 0
    d = mc_label_samples(P_hat, 2, 1, 40000, rng)
    for name, x in d.items():
        assert abs(x.mean() - exact) < 4 * x.std(ddof=1) / np.sqrt(len(x)), name
    assert d["entropy_path"].var() < d["surprisal"].var()
