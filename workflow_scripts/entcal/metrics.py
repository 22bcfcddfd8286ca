"""Per-token entropy and log loss of next-token distributions.

All quantities are in nats. Shapes:
- ``logits``: (..., V) unnormalised scores of a next-token distribution;
- ``targets``: (...) integer token ids;
- outputs: (...) float32 tensors.

A temperature ``tau`` means the distribution softmax(logits / tau), the one a sampler at
temperature ``tau`` draws from; the paper's "log loss at temperature tau" is the log loss of
that distribution on human text.

The chunked variants bound peak memory: they never hold more than ``chunk`` positions of a
float32 log-softmax at once, which matters at L = 2048 and V = 152k (Qwen2.5).
"""

from __future__ import annotations

import torch

__all__ = ["entropy_from_logits", "token_logloss_entropy", "chunked_logloss_entropy"]


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy (nats) of softmax(logits / temperature) over the last axis.

    Masked entries (``-inf``, as left by top-k / top-p warpers) contribute 0.
    Computed in float32 at least, whatever the input dtype.
    """
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if temperature != 1.0:
        x = x / temperature
    logp = torch.log_softmax(x, dim=-1)
    p = logp.exp()
    plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))
    return -plogp.sum(dim=-1)


def token_logloss_entropy(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log loss -log p(target) and entropy of softmax(logits / temperature), both (...)."""
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if temperature != 1.0:
        x = x / temperature
    logp = torch.log_softmax(x, dim=-1)
    p = logp.exp()
    ent = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)
    nll = -logp.gather(-1, targets.unsqueeze(-1).long()).squeeze(-1)
    return nll, ent


def chunked_logloss_entropy(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    targets: torch.Tensor,
    temperatures: list[float],
    chunk: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log loss and entropy for several temperatures from final hidden states.

    ``hidden``: (B, L, D) final (normalised) hidden states; ``head``: the LM head mapping D -> V;
    ``targets``: (B, L) the token that follows each position. Returns two tensors of shape
    (len(temperatures), B, L): log loss and entropy, float32. The vocabulary projection is
    applied ``chunk`` positions at a time, so the full (B, L, V) logits never exist at once.
    """
    B, L, _ = hidden.shape
    nll = torch.empty(len(temperatures), B, L, dtype=torch.float32, device=hidden.device)
    ent = torch.empty_like(nll)
    for start in range(0, L, chunk):
        stop = min(L, start + chunk)
        logits = head(hidden[:, start:stop])
        for k, tau in enumerate(temperatures):
            n, e = token_logloss_entropy(logits, targets[:, start:stop], tau)
            nll[k, :, start:stop] = n
            ent[k, :, start:stop] = e
        del logits
    return nll, ent
