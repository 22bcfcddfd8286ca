"""Section 5 solved exactly: future-entropy scaling (Algorithm 1) on finite-state autoregressive models.

Setting. Vocabulary of V tokens, horizon T. A model is an array ``P`` of shape (T, V + 1, V):
``P[t, s]`` is the next-token distribution at step t (0-based) in state s, where the state is the
previous token (an order-1 Markov chain; state V is the start). Conditionals may differ per step,
which the adjusted models need. Every quantity is a dynamic program over (t, s); nothing is sampled.

Quantities (nats). nu_t: distribution of the human state at step t (under the true model p*);
mu_t: the same under the model's own generations.

- per-step generation entropy H_t = sum_s mu_t(s) H(P[t, s]);
- per-step log loss L_t = sum_s nu_t(s) sum_y p*(y|s) (-log P[t, s, y]);
- future entropy F_t(s) = H(P[t, s]) + sum_y P[t, s, y] F_{t+1}(y), F_T = 0 (entropy of the rest);
- future log loss LL_t(s) = sum_y p*(y|s) (-log P[t, s, y] + LL_{t+1}(y)) (log loss on the human rest);
- whole-sequence EntCE per token = (1/T) sum_t (H_t - L_t) = (F_0(start) - LL_0(start)) / T.

Algorithm 1 (paper, Section 5). For t = T-1 .. 0, with the steps after t already adjusted and
f(y) = F_{t+1}(y) their exact future entropy, tilt step t:
    p_ent(y | s) ∝ p̂(y | s)^(1 + a_t) exp(-a_t f(y)),
choosing a_t to minimise the expected step-t log loss on human prefixes, E_{s~nu_t, y~p*}[-log p_ent(y|s)].
The objective is convex in a_t; its derivative is E_{nu_t, p_ent}[g] - E_{nu_t, p*}[g] with
g(y) = log p̂(y|s) - f(y). a_t = 0 gives back p̂, so every step's log loss, and the total, is no worse.

What Theorem 5.2 bounds. Write G_t = E_{s ~ nu_t}[F_t(s) - LL_t(s)] for the adjusted model: after a
human prefix of length t, the entropy of the model's rest minus its log loss on the human rest.
Substituting the tilt into the recursions gives, exactly,
    G_t = G_{t+1} - (1 + a_t) * dL_t/da_t,   G_T = 0,
so with every a_t stationary (|dL_t/da_t| <= eps) |G_t| <= sum_{u >= t} (1 + a_u) eps: the theorem's
per-prefix-length calibration, and at t = 0 the whole-sequence EntCE. It does not bound the per-step
gap H_t - L_t of the model's own generations (mu_t differs from nu_t); we measure both:
``max_abs_prefix_gap`` = max_t |G_t| / (T - t) and ``max_abs_step_entce`` = max_t |H_t - L_t|.

Baselines on the same axes: local temperature (one tau for every step, P^(1/tau)); globally
normalised temperature p̂(y_1..T)^(1/tau) / Z (a backward recursion makes it autoregressive);
top-p truncation; the one-step lookahead (f truncated to 1 step, Braverman et al. 2020) and k-step
truncations; Algorithm 1 with a noisy predictor f + delta * noise.

Monte Carlo labels (Algorithm 2): from state s at step t, m sampled continuations; the estimator
``surprisal`` averages sum_u -log P(y_u), ``entropy_path`` averages sum_u H(P[u, s_u]) along the
path. Both are unbiased for F_t(s); the second has lower variance.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
from scipy import optimize

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ models and basic recursions


def start_state(P: np.ndarray) -> int:
    return P.shape[1] - 1


def row_entropy(P: np.ndarray) -> np.ndarray:
    """H(P[..., :]) over the last axis, 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(P > 0, P * np.log(P), 0.0).sum(-1)


def state_marginals(P: np.ndarray) -> np.ndarray:
    """mu[t, s]: probability of being in state s at step t when generating from P; shape (T, S)."""
    T, S, V = P.shape
    mu = np.zeros((T, S))
    mu[0, start_state(P)] = 1.0
    for t in range(T - 1):
        mu[t + 1, :V] = mu[t] @ P[t]
    return mu


def _neg_log(Q: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -np.log(Q)


def per_step(Q: np.ndarray, P_true: np.ndarray) -> dict[str, np.ndarray]:
    """Per-step generation entropy H_t, human log loss L_t and teacher-forced entropy, each (T,)."""
    mu, nu = state_marginals(Q), state_marginals(P_true)
    HQ = row_entropy(Q)
    with np.errstate(invalid="ignore"):
        cross = np.where(P_true > 0, P_true * _neg_log(Q), 0.0).sum(-1)
    with np.errstate(invalid="ignore"):  # unreachable states carry no loss, even where it is infinite
        logloss = np.where(nu > 0, nu * cross, 0.0).sum(1)
    return {"entropy": (mu * HQ).sum(1), "logloss": logloss, "tf_entropy": (nu * HQ).sum(1)}


def future_entropy(Q: np.ndarray) -> np.ndarray:
    """F[t, s] for t = 0..T (F[T] = 0): entropy of the rest of the sequence from state s at step t."""
    T, S, V = Q.shape
    F = np.zeros((T + 1, S))
    HQ = row_entropy(Q)
    for t in range(T - 1, -1, -1):
        F[t] = HQ[t] + Q[t] @ F[t + 1, :V]
    return F


def future_logloss(Q: np.ndarray, P_true: np.ndarray) -> np.ndarray:
    """LL[t, s]: log loss of Q on the human rest of the sequence from state s at step t."""
    T, S, V = Q.shape
    LL = np.zeros((T + 1, S))
    with np.errstate(invalid="ignore"):
        cross = np.where(P_true > 0, P_true * _neg_log(Q), 0.0).sum(-1)
    for t in range(T - 1, -1, -1):
        LL[t] = cross[t] + P_true[t] @ LL[t + 1, :V]
    return LL


def prefix_gaps(Q: np.ndarray, P_true: np.ndarray) -> np.ndarray:
    """G_t = E_{s~nu_t}[F_t(s) - LL_t(s)], t = 0..T-1: the quantity Theorem 5.2 bounds."""
    nu = state_marginals(P_true)
    gap = future_entropy(Q)[:-1] - future_logloss(Q, P_true)[:-1]
    with np.errstate(invalid="ignore"):
        return np.where(nu > 0, nu * gap, 0.0).sum(1)


def truncated_future_entropy(Q: np.ndarray, t: int, k: int) -> np.ndarray:
    """Entropy of the next k steps (t..t+k-1, cut at T) from each state at step t; shape (S,)."""
    T, S, V = Q.shape
    HQ = row_entropy(Q)
    stop = min(T, t + k)
    F = np.zeros(S)
    for u in range(stop - 1, t - 1, -1):
        F = HQ[u] + Q[u] @ F[:V]
    return F


def evaluate(Q: np.ndarray, P_true: np.ndarray) -> dict:
    """Summary numbers of a model against the truth (per token; see the module docstring)."""
    T = Q.shape[0]
    c = per_step(Q, P_true)
    G = prefix_gaps(Q, P_true)
    return {
        "entropy": c["entropy"].mean(),
        "logloss": c["logloss"].mean(),
        "tf_entropy": c["tf_entropy"].mean(),
        "entce": c["entropy"].mean() - c["logloss"].mean(),
        "max_abs_step_entce": np.max(np.abs(c["entropy"] - c["logloss"])),
        "max_abs_prefix_gap": np.max(np.abs(G) / (T - np.arange(T))),
    }


# ------------------------------------------------------------------ instances


def make_instance(vocab: int, horizon: int, n_train: int, smoothing: float, concentration: float, seed: int):
    """(P_true, P_hat): a peaked random order-1 chain and its add-``smoothing`` estimate from
    ``n_train`` sampled sequences (pooled over steps), which over-weights rare transitions."""
    rng = np.random.default_rng(seed)
    V, S = vocab, vocab + 1
    trans = rng.dirichlet(np.full(V, concentration), size=S)
    P_true = np.broadcast_to(trans, (horizon, S, V)).copy()
    counts = np.zeros((S, V))
    seqs = sample_paths(P_true, 0, np.full(n_train, S - 1), rng)
    prev = np.full(n_train, S - 1)
    for t in range(horizon):
        np.add.at(counts, (prev, seqs[:, t]), 1)
        prev = seqs[:, t]
    est = (counts + smoothing) / (counts + smoothing).sum(1, keepdims=True)
    return P_true, np.broadcast_to(est, (horizon, S, V)).copy()


def sample_paths(Q: np.ndarray, t: int, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample continuations from step t in the given states; returns tokens of shape (n, T - t)."""
    T = Q.shape[0]
    n = len(states)
    out = np.empty((n, T - t), dtype=np.int64)
    s = states.copy()
    for u in range(t, T):
        cdf = np.cumsum(Q[u, s], axis=1)
        y = (rng.random((n, 1)) > cdf).sum(1)
        y = np.minimum(y, Q.shape[2] - 1)
        out[:, u - t] = y
        s = y
    return out


# ------------------------------------------------------------------ samplers / adjustments


def local_temperature(P: np.ndarray, tau: float) -> np.ndarray:
    """Per-step temperature: P^(1/tau), renormalised row by row."""
    logits = np.log(P) / tau
    logits -= logits.max(-1, keepdims=True)
    Q = np.exp(logits)
    return Q / Q.sum(-1, keepdims=True)


def global_temperature(P: np.ndarray, tau: float) -> np.ndarray:
    """The autoregressive form of p(y_1..T)^(1/tau) / Z: Q_t(y|s) ∝ P_t(y|s)^(1/tau) Z_{t+1}(y)."""
    T, S, V = P.shape
    logZ = np.zeros(S)  # log Z_{t+1}(state), zero past the horizon
    Q = np.empty_like(P)
    for t in range(T - 1, -1, -1):
        w = np.log(P[t]) / tau + logZ[None, :V]
        m = w.max(-1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(w - m).sum(-1))
        Q[t] = np.exp(w - lse[:, None])
        logZ = lse
    return Q


def top_p(P: np.ndarray, p: float) -> np.ndarray:
    """Nucleus truncation: keep the smallest top set with mass >= p, renormalise."""
    order = np.argsort(-P, axis=-1)
    sorted_p = np.take_along_axis(P, order, -1)
    keep_sorted = (np.cumsum(sorted_p, -1) - sorted_p) < p
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, -1)
    Q = np.where(keep, P, 0.0)
    return Q / Q.sum(-1, keepdims=True)


def _tilt(logp_hat: np.ndarray, f: np.ndarray, a: float) -> np.ndarray:
    """p_ent(. | s) ∝ p̂^(1 + a) exp(-a f); rows of shape (S, V)."""
    w = (1 + a) * logp_hat - a * f[None, :]
    w -= w.max(-1, keepdims=True)
    Q = np.exp(w)
    return Q / Q.sum(-1, keepdims=True)


def fit_alpha(
    logp_hat: np.ndarray, f: np.ndarray, nu: np.ndarray, p_true: np.ndarray, eps: float
) -> tuple[float, float]:
    """a minimising E_{s~nu, y~p*}[-log p_ent(y|s)]; returns (a, derivative at a).

    The derivative E_{nu,p_ent}[g] - E_{nu,p*}[g], g = log p̂ - f, increases with a (convexity):
    root-find it with Brent's method to |derivative| <= eps, within a in [-0.99, 1e3].
    """
    g = logp_hat - f[None, :]
    target = (nu[:, None] * p_true * g).sum()

    def grad(a):
        return (nu[:, None] * _tilt(logp_hat, f, a) * g).sum() - target

    lo, hi = -0.99, 1.0
    while grad(hi) < 0 and hi < 1e3:
        hi *= 4
    if grad(lo) > 0:
        return lo, grad(lo)
    if grad(hi) < 0:
        return hi, grad(hi)
    a = optimize.brentq(grad, lo, hi, xtol=1e-14, rtol=1e-14, maxiter=500)
    d = grad(a)
    if abs(d) > eps:  # polish with bisection on the monotone derivative
        lo_, hi_ = (a, hi) if d < 0 else (lo, a)
        while abs(d) > eps and hi_ - lo_ > 1e-15:
            a = 0.5 * (lo_ + hi_)
            d = grad(a)
            lo_, hi_ = (a, hi_) if d < 0 else (lo_, a)
    return a, d


def algorithm1(
    P_hat: np.ndarray,
    P_true: np.ndarray,
    eps: float = 1e-10,
    truncate: int | None = None,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Future-entropy scaling, backwards from the last step. Returns (adjusted model, a_t, dL_t/da_t).

    ``truncate=k`` uses the k-step truncated future entropy of the already-adjusted later steps
    (k = 1: one-step lookahead); ``noise`` adds delta * N(0, 1) to the predictor (fixed per (t, y)).
    """
    T, S, V = P_hat.shape
    Q = P_hat.copy()
    nu = state_marginals(P_true)
    alphas, grads = np.zeros(T), np.zeros(T)
    for t in range(T - 1, -1, -1):
        if t == T - 1:
            f = np.zeros(V)
        elif truncate is None:
            f = future_entropy(Q)[t + 1, :V]
        else:
            f = truncated_future_entropy(Q, t + 1, truncate)[:V]
        if noise:
            f = f + noise * rng.standard_normal(V)
        logp = np.log(P_hat[t])
        alphas[t], grads[t] = fit_alpha(logp, f, nu[t], P_true[t], eps)
        Q[t] = _tilt(logp, f, alphas[t])
    return Q, alphas, grads


def adjust_with_alphas(P_hat: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """The tilted model for given a_t (exact future entropy of the later, already tilted steps)."""
    T, S, V = P_hat.shape
    Q = P_hat.copy()
    for t in range(T - 1, -1, -1):
        f = future_entropy(Q)[t + 1, :V] if t < T - 1 else np.zeros(V)
        Q[t] = _tilt(np.log(P_hat[t]), f, alphas[t])
    return Q


def entce_root(make, lo: float, hi: float, P_true: np.ndarray, key: str = "entce", target: float = 0.0) -> float:
    """The parameter in [lo, hi] at which ``evaluate(make(x))[key]`` equals ``target`` (Brent);
    the closer end point when there is no sign change."""
    fn = lambda x: evaluate(make(x), P_true)[key] - target  # noqa: E731
    if fn(lo) * fn(hi) > 0:
        return lo if abs(fn(lo)) < abs(fn(hi)) else hi
    return optimize.brentq(fn, lo, hi, xtol=1e-10)


# ------------------------------------------------------------------ brute force (tests, tiny instances)


def brute_force(Q: np.ndarray, P_true: np.ndarray) -> dict:
    """Per-step H_t and L_t and the whole-sequence entropy, by enumerating every prefix (tiny V, T)."""
    T, S, V = Q.shape
    H, L = np.zeros(T), np.zeros(T)
    for t in range(T):
        for prefix in itertools.product(range(V), repeat=t):
            q = pt = 1.0
            s = S - 1
            for u, tok in enumerate(prefix):
                q *= Q[u, s, tok]
                pt *= P_true[u, s, tok]
                s = tok
            H[t] += q * -sum(x * np.log(x) for x in Q[t, s] if x > 0)
            L[t] += pt * sum(P_true[t, s, y] * -np.log(Q[t, s, y]) for y in range(V) if P_true[t, s, y] > 0)
    probs = np.array(list(sequence_probs(Q).values()))
    return {"entropy": H, "logloss": L, "sequence_entropy": float(-(probs[probs > 0] * np.log(probs[probs > 0])).sum())}


def sequence_probs(Q: np.ndarray) -> dict[tuple, float]:
    T, S, V = Q.shape
    out = {}
    for y in itertools.product(range(V), repeat=T):
        p, s = 1.0, S - 1
        for t, tok in enumerate(y):
            p *= Q[t, s, tok]
            s = tok
        out[y] = p
    return out


# ------------------------------------------------------------------ Monte Carlo labels (Algorithm 2)


# ------------------------------------------------------------------ the study
