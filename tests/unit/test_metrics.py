"""Entropy and log-loss kernels against float64 NumPy references."""

import math

import numpy as np
import pytest
import torch

from entcal.metrics import entropy_from_logits, token_logloss_entropy


def ref_logsoftmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def ref_stats(logits: np.ndarray, targets: np.ndarray, tau: float):
    lp = ref_logsoftmax(logits.astype(np.float64) / tau)
    ent = -(np.exp(lp) * lp).sum(-1)
    nll = -np.take_along_axis(lp, targets[..., None], -1)[..., 0]
    return nll, ent


def test_uniform_logits_have_entropy_log_v():
    for v in (2, 7, 300, 152064):
        ent = entropy_from_logits(torch.zeros(3, v))
        assert torch.allclose(ent, torch.full((3,), math.log(v)), atol=1e-5)


@pytest.mark.parametrize("tau", [1.0, 0.8, 1.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_stats_match_float64(tau, dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(4, 9, 500, generator=g) * 3).to(dtype)
    targets = torch.randint(0, 500, (4, 9), generator=g)
    nll, ent = token_logloss_entropy(logits, targets, tau)
    r_nll, r_ent = ref_stats(logits.float().numpy(), targets.numpy(), tau)
    np.testing.assert_allclose(nll.numpy(), r_nll, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ent.numpy(), r_ent, atol=1e-5, rtol=0)
    assert nll.dtype == ent.dtype == torch.float32


def test_masked_logits_entropy_is_that_of_the_renormalised_support():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 50, generator=g)
    keep = torch.topk(logits, 7).indices
    masked = torch.full_like(logits, -float("inf")).scatter(1, keep, logits.gather(1, keep))
    ent = entropy_from_logits(masked)
    _, r_ent = ref_stats(logits.gather(1, keep).numpy(), np.zeros(5, dtype=int), 1.0)
    np.testing.assert_allclose(ent.numpy(), r_ent, atol=1e-6)
    assert torch.isfinite(ent).all()


@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_row_blocks_and_chunked_sums_match_float64(tau, monkeypatch):
    """A 262k-entry vocabulary (not a multiple of the sum chunk), rows in blocks of 2 (5 rows: a short last
    block), some entries -inf: log Z, entropy and log loss against float64 NumPy over the whole vocabulary."""
    from entcal import metrics

    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 2 * 262_147)
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 262_147, generator=g) * 4
    logits[1, :100_000] = -float("inf")
    logits[3, 5:] = -float("inf")  # five live tokens
    targets = torch.tensor([0, 100_001, 7, 2, 262_146])
    logz, ent = metrics.logz_entropy(logits, tau)
    nll, ent2 = token_logloss_entropy(logits, targets, tau)
    x = logits.double().numpy() / tau
    m = x.max(-1, keepdims=True)
    r_logz = (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[:, 0]
    lp = x - r_logz[:, None]
    r_ent = -np.where(np.isfinite(lp), np.exp(lp) * np.where(np.isfinite(lp), lp, 0), 0).sum(-1)
    r_nll = -np.take_along_axis(lp, targets.numpy()[:, None], -1)[:, 0]
    np.testing.assert_allclose(logz.numpy(), r_logz, atol=2e-6, rtol=0)
    np.testing.assert_allclose(ent.numpy(), r_ent, atol=2e-6, rtol=0)
    np.testing.assert_allclose(nll.numpy(), r_nll, atol=2e-6, rtol=0)
    np.testing.assert_allclose(ent2.numpy(), r_ent, atol=2e-6, rtol=0)


def test_entropy_gradient_matches_float64_autograd():
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(3, 40, generator=g) * 2).requires_grad_()
    from entcal.metrics import logz_entropy

    logz_entropy(x, 0.8)[1].sum().backward()
    xd = x.detach().double().requires_grad_()
    lp = torch.log_softmax(xd / 0.8, -1)
    (-(lp.exp() * lp).sum(-1)).sum().backward()
    torch.testing.assert_close(x.grad.double(), xd.grad, atol=1e-5, rtol=0)
