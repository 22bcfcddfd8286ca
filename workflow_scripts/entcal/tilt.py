"""The future-entropy tilt of the paper's Section 5 and its alpha, on given log-probabilities.

    p_ent(y | x) ∝ p̂(y | x)^(1 + a) · exp(-a · f(x, y))

f predicts the entropy of what the model would generate after choosing y (the trained head of
:mod:`entcal.predictor`, or the exact one-step lookahead of :mod:`entcal.lookahead`). With f = 0 the
tilt is temperature 1 / (1 + a); a = 0 gives back p̂. ``a`` is one number per bucket of generation
steps, chosen to minimise log loss on calibration-split human text. Tensors: ``logp`` (N, V)
log-probabilities, ``f_top`` (N, K) the predictions for the top-K candidates ``top_idx`` (N, K),
``targets`` (N,) the human tokens; nats throughout. No model, no files.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar

from entcal.metrics import BLOCK_ELEMENTS, token_logloss_entropy
from entcal.samplers import sampler as registry_entry


def tilt_logprobs(logp: torch.Tensor, f_top: torch.Tensor, top_idx: torch.Tensor, alpha) -> torch.Tensor:
    """log p_ent, normalised: (1 + a) log p̂ - a f over the vocabulary.

    Tokens outside the candidates get the p̂-weighted mean of ``f_top`` (the head is trained on
    candidates only, so its values on tokens the model would not pick are not trusted); tokens a
    truncation removed (-inf) stay removed. ``alpha``: a float or an (N,) tensor, > -1.
    """
    f_top = f_top.to(logp.dtype)
    w = torch.softmax(logp.gather(-1, top_idx), -1)
    f_rest = (w * f_top).sum(-1, keepdim=True)
    f = f_rest.expand_as(logp).scatter(-1, top_idx, f_top)
    a = alpha[:, None].to(logp.dtype) if torch.is_tensor(alpha) else float(alpha)
    z = (1 + a) * logp - a * f
    z = torch.where(torch.isneginf(logp), logp, z)
    return torch.log_softmax(z, -1)


def step_bucket(steps, edges: list[int]) -> np.ndarray:
    """Index of the bucket of each generation step (0-based), buckets starting at ``edges``."""
    return np.searchsorted(np.asarray(edges), np.asarray(steps), side="right") - 1


ROWS = 256  # at most this many positions per block: the fit data holds log p over the vocabulary (N x V), and
# every tilted copy of it would be as large again (a 262k vocabulary: 1 GB per 1000 positions), so the fits work
# a block at a time; blocks of at most BLOCK_ELEMENTS entries (a few positions of a 262k vocabulary) also keep
# the temporaries in cache, several times faster than 256 MB ones


def _blocks(n: int, v: int):
    rows = max(1, min(ROWS, BLOCK_ELEMENTS // max(v, 1)))
    return [slice(i, min(n, i + rows)) for i in range(0, n, rows)]


def _at(alpha, sl: slice):
    return alpha[sl] if torch.is_tensor(alpha) and alpha.ndim else alpha


def tilt_nll(logp, f_top, top_idx, targets, alpha) -> torch.Tensor:
    """Per-position log loss of the targets under the tilted distribution (a block of positions at a time)."""
    return torch.cat(
        [
            -tilt_logprobs(logp[b], f_top[b], top_idx[b], _at(alpha, b)).gather(-1, targets[b, None])[:, 0]
            for b in _blocks(len(targets), logp.shape[-1])
        ]
    )


def tilt_stats(logp, f_top, top_idx, targets, alpha) -> tuple[float, float]:
    """(mean entropy, mean log loss) of the tilt over the positions, a block at a time."""
    return _block_stats(lambda b: tilt_logprobs(logp[b], f_top[b], top_idx[b], _at(alpha, b)), targets, logp.shape[-1])


def _block_stats(scores_of, targets, v: int, temperature: float = 1.0) -> tuple[float, float]:
    ent, nll = 0.0, 0.0
    for b in _blocks(len(targets), v):
        nl, en = token_logloss_entropy(scores_of(b), targets[b], temperature)
        ent, nll = ent + float(en.double().sum()), nll + float(nl.double().sum())
    n = max(len(targets), 1)
    return ent / n, nll / n


def fit_alpha(logp, f_top, top_idx, targets, bounds=(-0.5, 4.0), xatol: float = 1e-4) -> dict:
    """The a minimising the mean log loss of ``targets`` under the tilt (scipy, bounded Brent).

    Returns alpha, logloss at alpha, logloss at 0 (the base model), and n (positions).
    """

    def obj(a):
        return float(tilt_nll(logp, f_top, top_idx, targets, a).double().mean())

    res = minimize_scalar(obj, bounds=bounds, method="bounded", options={"xatol": xatol})
    return {"alpha": float(res.x), "logloss": float(res.fun), "logloss_base": obj(0.0), "n": int(len(targets))}


def predictions(data: dict, sampler: str) -> torch.Tensor:
    """f of a tilt sampler on the fit data (:func:`entcal.labels.fit_data`): the head's or the lookahead's."""
    return data["f_head"] if registry_entry(sampler).predictor == "head" else data["f_look"]


def fit_alphas(data: dict, samplers: list[str], edges: list[int], bounds, on_fit=None) -> dict[str, list[dict]]:
    """{sampler: one fit per step bucket (bucket_start, alpha, logloss, logloss_base, n)} on the fit data;
    a bucket without positions keeps alpha 0. ``on_fit(fits_done, positions_done)`` after each (progress)."""
    bucket = torch.tensor(step_bucket(data["step"].numpy(), edges))
    fits = {}
    for s in samplers:
        f = predictions(data, s)
        fits[s] = []
        for q, start in enumerate(edges):
            m = bucket == q
            if not m.any():
                fits[s].append({"bucket_start": start, "alpha": 0.0, "logloss": np.nan, "logloss_base": np.nan, "n": 0})
            else:
                r = fit_alpha(data["logp"][m], f[m], data["top"][m], data["target"][m], tuple(bounds))
                fits[s].append({"bucket_start": start, **r})
            if on_fit is not None:
                done = sum(map(len, fits.values()))
                on_fit(done, sum(x["n"] for v in fits.values() for x in v))
    return fits


def mean_stats(scores: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> tuple[float, float]:
    """(mean entropy, mean log loss) over positions of the distributions ``scores / temperature`` (log-probs or
    logits), a block of positions at a time."""
    return _block_stats(lambda b: scores[b], targets, scores.shape[-1], temperature)


def temperature_at_entropy(
    logp: torch.Tensor, targets: torch.Tensor, entropy: float, lo: float = 0.05, hi: float = 5.0
):
    """The global temperature whose mean entropy over the positions equals ``entropy`` (Brent), and
    its mean log loss: plain temperature at exactly equal (teacher-forced) entropy."""

    def gap(tau):
        return mean_stats(logp, targets, tau)[0] - entropy

    if gap(lo) > 0 or gap(hi) < 0:
        return float("nan"), float("nan")
    tau = brentq(gap, lo, hi, xtol=1e-6)
    return float(tau), mean_stats(logp, targets, tau)[1]


def equal_entropy_comparison(data: dict, fits: dict, edges: list[int]) -> dict:
    """For each tilt at its fitted alphas: its mean entropy and log loss on the fit windows (human
    text, teacher-forced), and those of the global temperature with exactly the same mean entropy.
    ``delta_logloss`` < 0: the tilt has lower log loss than temperature at equal entropy."""
    bucket = step_bucket(data["step"].numpy(), edges)
    out = {}
    for s, buckets in fits.items():
        a = torch.tensor([buckets[q]["alpha"] for q in bucket], dtype=data["logp"].dtype)
        ent, ll = tilt_stats(data["logp"], predictions(data, s), data["top"], data["target"], a)
        tau, ll_t = temperature_at_entropy(data["logp"], data["target"], ent)
        base_ent, base_ll = mean_stats(data["logp"], data["target"])
        out[s] = {
            "entropy": ent,
            "logloss": ll,
            "base_entropy": base_ent,
            "base_logloss": base_ll,
            "temperature": tau,
            "temperature_logloss": ll_t,
            "delta_logloss": ll - ll_t,
        }
    return out


def tradeoff_rows(data: dict, alphas: list[float]) -> list[dict]:
    """Teacher-forced trade-off on human text: mean log loss and entropy of temperature 1/(1+a) and of
    each tilt at fixed a."""
    rows = []
    for a in alphas:
        methods = {
            "temperature": lambda: mean_stats(data["logp"], data["target"], 1 / (1 + a)),
            "future_entropy": lambda: tilt_stats(data["logp"], data["f_head"], data["top"], data["target"], a),
        }
        if "f_look" in data:
            methods["one_step_lookahead"] = lambda: tilt_stats(
                data["logp"], data["f_look"], data["top"], data["target"], a
            )
        for m, stats in methods.items():
            ent, ll = stats()
            rows.append(
                {
                    "method": m,
                    "alpha": a,
                    "temperature": 1 / (1 + a) if m == "temperature" else np.nan,
                    "logloss": ll,
                    "tf_entropy": ent,
                }
            )
    return rows
