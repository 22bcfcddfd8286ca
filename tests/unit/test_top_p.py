"""Top-p without a full sort (entcal.sampling.TopPThreshold): the kept set of a full sort, on Gemma-sized
rows (262,144 entries) and with ties at the boundary, checked against an independent float64 NumPy reference
and against transformers' TopPLogitsWarper where the two definitions agree."""

import numpy as np
import pytest
import torch
from transformers import TopPLogitsWarper

from entcal.sampling import TopPThreshold, sampling_processors, top_p_reference


def numpy_nucleus(logits: np.ndarray, p: float) -> np.ndarray:
    """Kept mask in float64: descending probabilities (stable order), the first index whose cumulative mass
    reaches p, and every token at least that probable (ties kept alike)."""
    x = logits.astype(np.float64)
    prob = np.exp(x - x.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    out = np.zeros_like(prob, dtype=bool)
    for r in range(prob.shape[0]):
        order = np.argsort(-prob[r], kind="stable")
        first = min(int(np.searchsorted(np.cumsum(prob[r][order]), p)), prob.shape[1] - 1)
        out[r] = prob[r] >= prob[r][order[first]]
    return out


def kept(scores):
    return ~torch.isinf(scores)


@pytest.mark.parametrize("scale, p", [(3.0, 0.9), (6.0, 0.9), (6.0, 0.5), (1.0, 0.95), (12.0, 0.99)])
def test_the_kept_set_is_the_full_sorts_on_262k_entry_rows(scale, p):
    g = torch.Generator().manual_seed(int(scale * 10 + p * 100))
    x = torch.randn(4, 262_144, generator=g) * scale  # scale 12: a nucleus of a few tokens; 1: over half the row
    ours = kept(TopPThreshold(p)(None, x))
    assert torch.equal(ours, top_p_reference(x, p))  # the same float64 mass along the same descending values
    assert np.array_equal(ours.numpy(), numpy_nucleus(x.numpy(), p))  # and an independent float64 computation's
    prob = torch.softmax(x.double(), -1)
    mass = (prob * ours).sum(-1)
    assert (mass >= p).all()  # the nucleus holds at least p ...
    smallest = torch.where(ours, prob, torch.ones_like(prob)).amin(-1)
    assert (mass - smallest < p).all()  # ... and without its least probable token it would not


def test_ties_at_the_boundary_are_kept_alike():
    v = 262_144
    x = torch.full((1, v), -30.0)
    x[0, :10] = 5.0  # ten equal tokens carry almost all the mass: the boundary falls inside them
    x[0, 10:20] = 2.0
    p = 0.5
    ours = kept(TopPThreshold(p)(None, x))
    assert torch.equal(ours, top_p_reference(x, p)) and torch.equal(ours, torch.from_numpy(numpy_nucleus(x.numpy(), p)))
    assert ours[0, :10].all() and not ours[0, 10:].any()  # all ten tied tokens, none of the rest
    hf = kept(TopPLogitsWarper(p)(None, x))
    assert 1 <= hf[0, :10].sum() < 10  # transformers keeps only some of the tied tokens: whichever its sort puts last


def test_agrees_with_transformers_but_for_its_float32_boundary():
    g = torch.Generator().manual_seed(5)
    for v, most in ((300, 0), (49_152, 1), (262_144, 2)):
        x = torch.randn(8, v, generator=g) * 3  # continuous values: no ties
        for p in (0.3, 0.8, 0.9, 0.95):
            ours, hf = kept(TopPThreshold(p)(None, x)), kept(TopPLogitsWarper(p)(None, x))
            # transformers' float32 softmax and cumulative sum move the boundary by at most a token or two of a
            # large row (never on a small one); every other token is kept or dropped alike
            assert (ours != hf).sum(-1).max() <= most, (v, p)


def test_edges_and_the_setting_it_serves():
    x = torch.tensor([[0.0, 1.0, -float("inf"), 2.0]])
    assert torch.equal(TopPThreshold(1.0)(None, x), x)  # p = 1: nothing truncated
    out = TopPThreshold(0.01)(None, x)
    assert torch.isinf(out[0, :3]).all() and out[0, 3] == 2.0  # at least the most probable token
    assert torch.isinf(TopPThreshold(0.99)(None, x)[0, 2])  # a truncated token stays truncated
    with pytest.raises(ValueError, match="top_p must be in"):
        TopPThreshold(0.0)
    procs = sampling_processors("top_p", 0.8, 0.9)
    assert [type(p).__name__ for p in procs] == ["TemperatureLogitsWarper", "TopPThreshold"]
    assert type(sampling_processors("top_k", 1.0, 50)[0]).__name__ == "TopKLogitsWarper"  # others: transformers'
    b = torch.randn(2, 3, 50, generator=torch.Generator().manual_seed(1))  # (batch, positions, V) as scoring has them
    assert torch.equal(kept(TopPThreshold(0.7)(None, b)), top_p_reference(b, 0.7))
