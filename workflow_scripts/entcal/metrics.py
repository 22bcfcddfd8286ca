"""Per-token entropy and log loss of next-token distributions.

All quantities are in nats. Shapes:
- ``logits``: (..., V) unnormalised scores of a next-token distribution;
- ``targets``: (...) integer token ids;
- outputs: (...) float32 tensors.

A temperature ``tau`` means the distribution softmax(logits / tau), the one a sampler at
temperature ``tau`` draws from; the paper's "log loss at temperature tau" is the log loss of
that distribution on human text.

Scoring (``entcal.score``) applies the vocabulary projection a chunk of positions at a time, so
a float32 log-softmax over the whole sequence (L = 2048, V = 152k for Qwen2.5) never exists at once.
"""

from __future__ import annotations

import torch

__all__ = [
    "entropy_from_logits",
    "entropy_from_logprobs",
    "logz_entropy",
    "projected_logloss_entropy",
    "token_logloss_entropy",
    "upcast",
]


def upcast(x: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision scores (entropies and log losses are never computed in 16 bits)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def entropy_from_logprobs(logp: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of a normalised log-distribution over the last axis; -inf entries contribute 0."""
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)


BLOCK_ELEMENTS = 2**18  # elements per row block (1 MB in float32): a whole-tensor pass over a 262k vocabulary
# is bound by page faults on fresh 256 MB temporaries; blocks that stay in cache run several times faster
SUM_CHUNK = 1024  # vocabulary entries summed in float32 before the float64 sum across chunks


def _sum64(t: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis, float64: float32 (pairwise) sums of SUM_CHUNK entries, then float64 across
    them; within 1e-7 relative of a float64 sum, without converting every entry to float64."""
    v = t.shape[-1]
    k = v // SUM_CHUNK
    s = t[..., : k * SUM_CHUNK].unflatten(-1, (k, SUM_CHUNK)).sum(-1).double().sum(-1)
    return s + t[..., k * SUM_CHUNK :].sum(-1, dtype=torch.float64) if k * SUM_CHUNK < v else s


def _logz_entropy_block(x: torch.Tensor, temperature: float, inplace: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    m = x.amax(-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    d = torch.sub(x, m)  # the one temporary besides e; -inf (truncated) -> the most negative finite value,
    lowest = torch.finfo(d.dtype).min  # whose exp is 0 and whose product with it is 0, not nan
    if inplace:
        if temperature != 1.0:
            d.mul_(1.0 / temperature)
        d.clamp_(min=lowest)
    else:  # the same steps out of place, for autograd
        d = (d / temperature).clamp(min=lowest)
    e = torch.exp(d)
    s = _sum64(e)
    ed = _sum64(d.mul_(e) if inplace else d * e)
    log_s = torch.log(s)
    return m.squeeze(-1).double() / temperature + log_s, log_s - ed / s


def logz_entropy(x: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log Z, entropy) of softmax(x / temperature) over the last axis, both float64, without forming log p.

    Elementwise work stays in ``x``'s dtype; the sums over the vocabulary accumulate in float64 across
    float32 chunks (a plain float32 sum over a 152k vocabulary is off by about 5e-5 nats). With
    m = max x, d = (x - m) / tau, e = exp(d), S = sum e: log Z = m / tau + log S and
    H = log S - sum(e d) / S. ``-inf`` entries (truncated tokens) contribute nothing. Rows go a block
    of BLOCK_ELEMENTS at a time; with gradients enabled on ``x`` the same formula runs out of place.
    """
    if x.requires_grad and torch.is_grad_enabled():
        return _logz_entropy_block(x, temperature, inplace=False)
    shape, v = x.shape[:-1], x.shape[-1]
    rows = x.reshape(-1, v)
    step = max(1, BLOCK_ELEMENTS // max(v, 1))
    if rows.shape[0] <= step:
        logz, ent = _logz_entropy_block(rows, temperature)
    else:
        parts = [_logz_entropy_block(rows[i : i + step], temperature) for i in range(0, rows.shape[0], step)]
        logz, ent = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return logz.reshape(shape), ent.reshape(shape)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy (nats) of softmax(logits / temperature) over the last axis.

    Masked entries (``-inf``, as left by top-k / top-p warpers) contribute 0.
    float32 (float64 for float64 input), whatever the input dtype.
    """
    x = upcast(logits)
    return logz_entropy(x, temperature)[1].to(x.dtype)


def token_logloss_entropy(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log loss -log p(target) and entropy of softmax(logits / temperature), both (...).

    float32 (float64 for float64 input); the vocabulary sums accumulate in float64 (:func:`logz_entropy`).
    """
    x = upcast(logits)
    logz, ent = logz_entropy(x, temperature)
    nll = logz - x.gather(-1, targets.unsqueeze(-1).long()).squeeze(-1).double() / temperature
    return nll.to(x.dtype), ent.to(x.dtype)


def projected_logloss_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, chunk: int | None = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log loss and entropy of softmax(hidden @ weight.T / temperature) at each position.

    ``hidden``: (L, d) final hidden states, ``weight``: (V, d) output embedding, ``targets``: (L,).
    With ``chunk`` the vocabulary projection and log-softmax run ``chunk`` positions at a time (peak
    memory O(chunk x V), the pattern ``entcal.score`` uses); ``chunk=None`` materialises the whole
    (L, V) float32 log-softmax (the baseline the benchmarks compare against).
    """
    L = hidden.shape[0]
    step = L if chunk is None else chunk
    nll = torch.empty(L, dtype=torch.float32 if hidden.dtype != torch.float64 else torch.float64)
    ent = torch.empty_like(nll)
    for s in range(0, L, step):
        logits = hidden[s : s + step] @ weight.T
        nll[s : s + step], ent[s : s + step] = token_logloss_entropy(logits, targets[s : s + step], temperature)
    return nll, ent
