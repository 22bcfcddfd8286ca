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

__all__ = ["entropy_from_logits", "entropy_from_logprobs", "projected_logloss_entropy", "token_logloss_entropy"]


def entropy_from_logprobs(logp: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of a normalised log-distribution over the last axis; -inf entries contribute 0."""
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy (nats) of softmax(logits / temperature) over the last axis.

    Masked entries (``-inf``, as left by top-k / top-p warpers) contribute 0.
    Computed in float32 at least, whatever the input dtype.
    """
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if temperature != 1.0:
        x = x / temperature
    return entropy_from_logprobs(torch.log_softmax(x, dim=-1))


def token_logloss_entropy(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log loss -log p(target) and entropy of softmax(logits / temperature), both (...)."""
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if temperature != 1.0:
        x = x / temperature
    logp = torch.log_softmax(x, dim=-1)
    nll = -logp.gather(-1, targets.unsqueeze(-1).long()).squeeze(-1)
    return nll, entropy_from_logprobs(logp)


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
