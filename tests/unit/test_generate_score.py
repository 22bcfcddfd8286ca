"""Generation and scoring on a tiny model, checked against independent float64 recomputation."""

import numpy as np
import pytest
import torch

from entcal.generate import sample_with_entropy
from entcal.prompts import select_examples
from entcal.models import load_model
from entcal.score import score_settings, setting_stats


@pytest.fixture(scope="module")
def model64(tiny_model_dir):
    model, tok = load_model(tiny_model_dir, "tiny", dtype="float32", device="cpu")
    return model.double(), tok


def ref_full_stats(model, ids: list[int], tau: float):
    """float64 log-softmax at every position of one unpadded sequence (a plain full forward)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double() / tau
    logp = torch.log_softmax(logits, -1)
    ent = -(logp.exp() * logp).sum(-1)
    return logp.numpy(), ent.numpy()


PROMPTS = [[5, 17, 33, 4, 99, 120], [7, 8], [250, 3, 3, 41]]  # different lengths -> left padding


@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_recorded_entropy_and_logprob_equal_a_teacher_forced_float64_pass(model64, tau):
    model, tok = model64
    out = sample_with_entropy(
        model, tok, PROMPTS, temperature=tau, max_new_tokens=12, batch_size=3, seed=0, stop_at_eos=False
    )
    for p, row in zip(PROMPTS, out):
        seq = p + row["token_ids"]
        logp, ent = ref_full_stats(model, seq, tau)
        pos = np.arange(len(p) - 1, len(seq) - 1)  # distribution that produced each generated token
        np.testing.assert_allclose(row["entropy"], ent[pos], atol=1e-5, rtol=0)
        np.testing.assert_allclose(row["logprob"], logp[pos, row["token_ids"]], atol=1e-5, rtol=0)
        assert len(row["token_ids"]) == row["n_tokens"] == 12


def test_sampling_is_seeded(model64):
    model, tok = model64
    kw = dict(temperature=1.0, max_new_tokens=10, batch_size=2, stop_at_eos=False)
    a = sample_with_entropy(model, tok, PROMPTS, seed=3, **kw)
    b = sample_with_entropy(model, tok, PROMPTS, seed=3, **kw)
    c = sample_with_entropy(model, tok, PROMPTS, seed=4, **kw)
    assert [r["token_ids"] for r in a] == [r["token_ids"] for r in b]
    assert [r["token_ids"] for r in a] != [r["token_ids"] for r in c]


def test_near_zero_temperature_is_greedy(model64):
    model, tok = model64
    out = sample_with_entropy(
        model, tok, PROMPTS[:1], temperature=1e-4, max_new_tokens=8, batch_size=1, seed=0, stop_at_eos=False
    )[0]
    seq = list(PROMPTS[0])
    for _ in range(8):
        with torch.no_grad():
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    assert out["token_ids"] == seq[len(PROMPTS[0]) :]
    assert np.all(out["entropy"] < 1e-3)


def test_generation_stops_at_eos(model64):
    """Near-greedy decoding with eos set to the 4th greedy token must stop right there."""
    import copy

    model, tok = model64
    kw = dict(temperature=1e-4, max_new_tokens=20, batch_size=3, seed=0)
    greedy = sample_with_entropy(model, tok, PROMPTS, stop_at_eos=False, **kw)
    tok2 = copy.deepcopy(tok)
    eos = greedy[0]["token_ids"][3]
    tok2.eos_token = tok2.convert_ids_to_tokens(eos)
    out = sample_with_entropy(model, tok2, PROMPTS, stop_at_eos=True, **kw)
    for g, row in zip(greedy, out):
        g = g["token_ids"]
        if eos in g:
            n = g.index(eos) + 1
            assert row["stopped_at_eos"] and row["token_ids"] == g[:n] and row["n_tokens"] == n
            assert len(row["entropy"]) == len(row["logprob"]) == n
        else:
            assert not row["stopped_at_eos"] and row["token_ids"] == g
    assert out[0]["n_tokens"] <= 4 and out[0]["stopped_at_eos"]


def test_scores_of_a_padded_batch_equal_unpadded_float64(model64):
    model, tok = model64
    pairs = [([5, 17, 33], [4, 99, 120, 6, 7]), ([7], [8, 9]), ([250, 3, 3, 41, 2, 2], [3, 1, 200])]
    temps = [1.0, 0.8]
    settings = [{"sampler": "ancestral", "temperature": t} for t in temps]
    out = score_settings(model, pairs, settings, batch_size=3, pad_id=tok.pad_token_id, epsilon=1e-3, chunk=2)
    for (p, r), s in zip(pairs, out):
        assert not s["outside"].any()
        for k, tau in enumerate(temps):
            logp, ent = ref_full_stats(model, p + r, tau)
            pos = np.arange(len(p) - 1, len(p) + len(r) - 1)
            np.testing.assert_allclose(s["logloss"][k], -logp[pos, r], atol=1e-5, rtol=0)
            np.testing.assert_allclose(s["tf_entropy"][k], ent[pos], atol=1e-5, rtol=0)


def test_select_examples_splits_prompt_and_reference(tiny_tokenizer):
    import pandas as pd

    text = "To be, or not to be, that is the question. " * 10
    ex = pd.DataFrame(
        {
            "example_id": [0, 1],
            "doc_id": ["a", "b"],
            "char_start": [0, 0],
            "prefix": ["", ""],
            "text": ["too short", text],
        }
    )
    chosen = select_examples(tiny_tokenizer, ex, prompt_tokens=5, ref_tokens=7, min_ref_tokens=7, n=5)
    assert [c[0] for c in chosen] == [1]
    body = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert chosen[0][1] == body[:5] and chosen[0][2] == body[5:12]


def test_truncated_scoring_on_a_hand_built_distribution():
    probs = torch.tensor([[0.5, 0.25, 0.15, 0.07, 0.03]], dtype=torch.float64)
    logits = probs.log().repeat(5, 1)
    targets = torch.arange(5)
    eps = 1e-3
    nll, ent, outside = setting_stats(logits, targets, {"sampler": "top_p", "temperature": 1.0, "param": 0.7}, eps)
    kept = torch.tensor([0.5, 0.25], dtype=torch.float64) / 0.75  # top-p 0.7 keeps the two largest (0.5 + 0.25 >= 0.7)
    assert outside.tolist() == [False, False, True, True, True]
    expect = [-np.log((1 - eps) * kept[0] + eps * 0.5), -np.log((1 - eps) * kept[1] + eps * 0.25)]
    expect += [-np.log(eps * q) for q in (0.15, 0.07, 0.03)]
    np.testing.assert_allclose(nll.numpy(), expect, rtol=1e-10)
    np.testing.assert_allclose(ent.numpy(), -(kept * kept.log()).sum().item(), rtol=1e-10)
    # top-k 3 at temperature 0.5: p^2 renormalised over the first three
    nll, ent, outside = setting_stats(logits, targets, {"sampler": "top_k", "temperature": 0.5, "param": 3}, 0.0)
    q = probs[0, :3] ** 2 / (probs[0, :3] ** 2).sum()
    np.testing.assert_allclose(nll[:3].numpy(), -q.log().numpy(), rtol=1e-10)
    assert torch.isinf(nll[3:]).all() and outside.sum() == 2


@pytest.mark.parametrize(
    "sampler,param", [("top_p", 0.8), ("top_k", 20), ("min_p", 0.05), ("typical", 0.9), ("eta", 0.01)]
)
def test_truncated_sampling_records_the_truncated_entropy(model64, sampler, param):
    from entcal.sampling import sampling_processors

    model, tok = model64
    out = sample_with_entropy(
        model,
        tok,
        PROMPTS,
        temperature=0.9,
        max_new_tokens=6,
        batch_size=3,
        seed=0,
        stop_at_eos=False,
        sampler=sampler,
        sampler_param=param,
    )
    procs = sampling_processors(sampler, 0.9, param)
    for p, row in zip(PROMPTS, out):
        seq = torch.tensor([p + row["token_ids"]])
        with torch.no_grad():
            logits = model(seq).logits[0, len(p) - 1 : -1].double()
        for proc in procs:
            logits = proc(seq[:, : len(p)], logits)
        logp = torch.log_softmax(logits, -1)
        ent = -(torch.where(logp.isinf(), 0.0, logp.exp() * logp)).sum(-1)
        np.testing.assert_allclose(row["entropy"], ent.numpy(), atol=1e-5)
        assert np.isfinite(row["logprob"]).all()  # sampled tokens are always inside the support
