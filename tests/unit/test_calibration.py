"""The trained future-entropy predictor and the calibrated samplers, against independent references."""

import numpy as np
import pandas as pd
import pytest
import torch

from entcal import labels, lookahead, predictor, sampling, tilt
from entcal.generate import sample_with_entropy
from entcal.models import load_model
from entcal.score import score_settings


@pytest.fixture(scope="module")
def model64(tiny_model_dir):
    model, tok = load_model(tiny_model_dir, "tiny", dtype="float32", device="cpu")
    return model.double(), tok


def _rand_case(n=6, v=9, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logp = torch.log_softmax(torch.randn(n, v, generator=g, dtype=torch.float64) * 2, -1)
    top = logp.topk(k, -1).indices
    f = torch.rand(n, k, generator=g, dtype=torch.float64) * 5
    return logp, top, f


def test_tilt_with_zero_predictor_is_identity_then_temperature():
    logp, top, _ = _rand_case()
    zero = torch.zeros(top.shape, dtype=torch.float64)
    torch.testing.assert_close(tilt.tilt_logprobs(logp, zero, top, 0.0), logp, atol=1e-12, rtol=0)
    for a in (0.25, 1.0, -0.3):
        tau = 1 / (1 + a)
        ref = torch.log_softmax(logp / tau, -1)  # temperature tau on the same distribution
        torch.testing.assert_close(tilt.tilt_logprobs(logp, zero, top, a), ref, atol=1e-12, rtol=0)


def test_tilt_matches_the_formula_in_float64():
    logp, top, f = _rand_case(seed=3)
    a = 0.7
    got = tilt.tilt_logprobs(logp, f, top, a)
    for i in range(logp.shape[0]):
        p = logp[i].exp().numpy()
        fi = np.full(p.shape, np.sum(p[top[i]] / p[top[i]].sum() * f[i].numpy()))  # rest: p-weighted mean
        fi[top[i].numpy()] = f[i].numpy()
        w = p ** (1 + a) * np.exp(-a * fi)
        np.testing.assert_allclose(got[i].exp().numpy(), w / w.sum(), atol=1e-12)


def test_fit_alpha_finds_the_known_optimum():
    # human tokens drawn from the tilt at a* itself: the log loss (a proper score) is minimised at a*
    logp, top, f = _rand_case(n=1, v=12, k=6, seed=5)
    a_star = 0.6
    q = tilt.tilt_logprobs(logp, f, top, a_star)[0].exp()
    n = 40000
    tgt = torch.multinomial(q, n, replacement=True, generator=torch.Generator().manual_seed(1))
    rep = lambda x: x.expand(n, *x.shape[1:])  # noqa: E731
    res = tilt.fit_alpha(rep(logp), rep(f), rep(top), tgt, bounds=(-0.5, 4.0))
    assert abs(res["alpha"] - a_star) < 0.06
    assert res["logloss"] <= res["logloss_base"]
    # and with f = 0 the fit is the log-loss-optimal temperature, found here by brute force
    zero = torch.zeros_like(rep(f))
    res0 = tilt.fit_alpha(rep(logp), zero, rep(top), tgt)
    grid = np.linspace(-0.5, 4, 4501)
    ll = [float(-torch.log_softmax((1 + a) * logp[0], -1)[tgt].mean()) for a in grid]
    assert abs(res0["alpha"] - grid[int(np.argmin(ll))]) < 2e-3


def test_candidate_entropies_equal_a_full_forward(model64):
    model, _ = model64
    ids = torch.tensor([[0, 0, 5, 17, 33, 4, 99], [7, 8, 9, 10, 11, 12, 13]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=True)
    ends = torch.tensor([[4, 7, 7], [2, 5, 7]])
    cands = torch.tensor([[3, 250, 1], [42, 42, 8]])
    got = lookahead.candidate_entropies(model, out.past_key_values, mask.bool(), ends, cands)
    assert out.past_key_values.get_seq_length() == 7  # cropped back
    _assert_full_forward_entropies(model, ids, mask, ends, cands, got)


def _assert_full_forward_entropies(model, ids, mask, ends, cands, got):
    """Each query's entropy equals that of one unbatched, unpadded forward over its prefix and candidate."""
    for b in range(cands.shape[0]):
        for q in range(cands.shape[1]):
            real = ids[b, : ends[b, q]][mask[b, : ends[b, q]].bool()].tolist() + [int(cands[b, q])]
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([real])).logits[0, -1], -1)
            assert abs(float(got[b, q]) - float(-(lp.exp() * lp).sum())) < 1e-9


def _labels(model, tok, n_prefix=24, k=4, rollouts=2, horizon=6):
    windows = pd.DataFrame(
        {
            "example_id": range(6),
            "prefix": "",
            "text": [
                "The quick brown fox jumps over the lazy dog. " * 6,
                "def add(a, b):\n    return a + b\n" * 6,
                "To be, or not to be, that is the question:\n" * 6,
                "The lazy dog sleeps. " * 10,
                "print(add(2, 3))\n" * 10,
                "Whether 'tis nobler in the mind to suffer\n" * 6,
            ],
        }
    )
    prefixes = labels.make_prefixes(
        tok, windows, prompt_tokens=8, max_len=40, per_window=n_prefix // 6, n_windows=6, heldout_fraction=0.34, seed=0
    )
    df, spent = labels.label_prefixes(
        model, tok, prefixes, candidates=k, rollouts=rollouts, horizon=horizon, batch_size=16, seed=0, stop_at_eos=False
    )
    return prefixes, df, spent


def test_labels_are_summed_rollout_entropies(model64):
    model, tok = model64
    prefixes, df, spent = _labels(model, tok)
    assert set(df["split"]) == {"train", "test"} and len(df) == len(prefixes) * 4
    assert spent > 0
    # the one-step lookahead column is the exact entropy after the candidate, from a plain forward
    for r in df.sample(5, random_state=0).itertuples():
        seq = prefixes[r.prefix_id]["prefix_ids"] + [r.candidate]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([seq])).logits[0, -1], -1)
        assert abs(r.onestep_entropy - float(-(lp.exp() * lp).sum())) < 1e-5
        assert r.label == pytest.approx(np.mean(r.label_rollouts), rel=1e-5)
        assert r.onestep_entropy <= r.label  # the rest of the sum is non-negative
    assert (df["rank"].groupby(df["prefix_id"]).apply(list).map(lambda x: x == [0, 1, 2, 3])).all()


def test_head_learns_and_beats_a_constant_on_held_out_labels():
    # synthetic labels with a known dependence on the hidden state, the token's embedding and its log-prob
    torch.manual_seed(0)
    n_prefix, d, v, k = 400, 12, 30, 5
    emb = torch.randn(v, d)
    h = torch.randn(n_prefix, d)
    w = torch.randn(d, d) / d**0.5
    rows = []
    for i in range(n_prefix):
        for c in torch.randperm(v)[:k].tolist():
            lp = -float(torch.rand(())) * 5
            y = 5 + 2 * float(torch.tanh(h[i] @ w @ emb[c])) - 0.5 * lp + 0.1 * float(torch.randn(()))
            rows.append(
                {
                    "prefix_id": i,
                    "window_id": i // 4,
                    "candidate": c,
                    "logprob": lp,
                    "label": y,
                    "onestep_entropy": float(torch.rand(())),
                    "label_rollouts": np.array([y, y], np.float32),
                    "split": "test" if i < 80 else "val" if i < 140 else "train",
                }
            )
    df = pd.DataFrame(rows)
    train, val, test = (df[df.split == s] for s in ("train", "val", "test"))
    head = predictor.FutureEntropyHead(emb, rank=8, hidden=32, mu=train.label.mean(), sigma=train.label.std())
    steps = []
    run = predictor.train_head(
        head,
        h,
        train,
        steps=600,
        lr=1e-2,
        batch_size=128,
        seed=0,
        val=val,
        on_step=lambda step, seen: steps.append((step, seen)),
    )
    assert steps == [(i, 128 * i) for i in range(1, len(run["loss"]) + 1)]  # progress after every step
    assert np.mean(run["loss"][-30:]) < 0.5 * np.mean(run["loss"][:30])
    assert run["val_loss"][-1][0] >= run["best_step"] and min(v for _, v in run["val_loss"]) < run["val_loss"][0][1]
    m = predictor.evaluate_head(head.eval(), h, train, test)
    assert m["rmse_test"] < 0.8 * m["rmse_constant"]
    assert m["r2_test"] > 0.3
    assert m["r2_test_ci_low"] < m["r2_test"] < m["r2_test_ci_high"] and m["n_test_windows"] == 20
    assert m["r2_test_ci_high"] - m["r2_test_ci_low"] < 0.5

    # the full-vocabulary output and the per-candidate output agree
    lp_all = torch.log_softmax(torch.randn(3, v), -1)
    idx = torch.tensor([[1, 2], [3, 4], [5, 6]])
    with torch.no_grad():
        full, some = head(h[:3], lp_all), head(h[:3], lp_all.gather(-1, idx), idx)
    torch.testing.assert_close(full.gather(-1, idx), some, atol=1e-5, rtol=0)


def test_window_bootstrap_intervals_widen_when_labels_cluster_by_window():
    """Labels sharing a window-level offset are not independent: resampling windows gives a wider R^2
    interval than the same number of independent labels, and covers the population R^2 (here 0.5)."""
    rng = np.random.default_rng(0)
    n_win, per = 40, 10
    x = rng.normal(size=n_win * per)
    w = np.repeat(np.arange(n_win), per)
    clustered = x + np.repeat(rng.normal(size=n_win), per) * 0.8 + rng.normal(size=n_win * per) * 0.6
    independent = x + rng.normal(size=n_win * per)
    cl = predictor.window_bootstrap_r2(clustered, {"x": x}, w, n_boot=500)["x"]
    ind = predictor.window_bootstrap_r2(independent, {"x": x}, np.arange(n_win * per), n_boot=500)["x"]
    assert cl[0] < 0.5 < cl[1] and ind[0] < 0.5 < ind[1]
    assert cl[1] - cl[0] > 1.3 * (ind[1] - ind[0])


def test_early_stopping_keeps_the_best_weights_when_training_overfits():
    # pure-noise labels: anything learnt is overfitting, so the validation loss is best early on
    torch.manual_seed(1)
    emb, h = torch.randn(20, 8), torch.randn(60, 8)
    df = pd.DataFrame(
        {
            "prefix_id": np.repeat(np.arange(60), 4),
            "candidate": np.tile([1, 2, 3, 4], 60),
            "logprob": -1.0,
            "label": np.random.default_rng(0).normal(10, 2, 240),
        }
    )
    train, val = df[df.prefix_id >= 20], df[df.prefix_id < 20]
    head = predictor.FutureEntropyHead(emb, rank=8, hidden=64, mu=train.label.mean(), sigma=train.label.std())
    run = predictor.train_head(
        head, h, train, steps=2000, lr=3e-2, batch_size=64, seed=0, val=val, eval_every=10, patience=5
    )
    assert len(run["loss"]) < 2000  # stopped early
    with torch.no_grad():
        v = float(
            torch.mean(
                (
                    (predictor._predict(head, h, val) - torch.tensor(val.label.to_numpy(), dtype=torch.float32))
                    / head.sigma
                )
                ** 2
            )
        )
    assert v == pytest.approx(min(x for _, x in run["val_loss"]), rel=1e-5)  # the best weights were restored


def test_head_round_trips_through_safetensors(tmp_path, model64):
    model, _ = model64
    head = predictor.FutureEntropyHead(model.get_output_embeddings().weight, rank=4, hidden=8, mu=3.0, sigma=2.0)
    path = tmp_path / "predictor.safetensors"
    predictor.save_head(head, path, {"head": {"rank": 4, "hidden": 8}})
    again, settings = predictor.load_head(path, model)
    h = torch.randn(3, model.config.hidden_size)
    lp = torch.log_softmax(torch.randn(3, model.config.vocab_size), -1)
    with torch.no_grad():
        torch.testing.assert_close(head(h, lp), again(h, lp))
    assert settings["head"]["rank"] == 4


def _calib(alpha_head, alpha_look, k):
    return {
        "candidates": k,
        "step_buckets": [0, 3],
        "mirostat_target": 2.0,
        "mirostat_eta": 0.1,
        "alpha": {
            "future_entropy": [{"alpha": alpha_head[0]}, {"alpha": alpha_head[1]}],
            "one_step_lookahead": [{"alpha": alpha_look[0]}, {"alpha": alpha_look[1]}],
        },
    }


PROMPTS = [[5, 17, 33, 4, 99, 120], [7, 8], [250, 3, 3, 41]]


@pytest.mark.parametrize("sampler", ["future_entropy", "one_step_lookahead", "mirostat"])
def test_generation_records_the_calibrated_distribution_and_scoring_agrees(model64, sampler):
    """Generation with each calibrated sampler, then every step re-derived independently from a
    plain full forward in float64; and scoring the generated text with the same sampler reproduces
    the recorded entropies (the same distribution, teacher-forced)."""
    model, tok = model64
    k = 5
    head = predictor.FutureEntropyHead(
        model.get_output_embeddings().weight, rank=4, hidden=8, mu=6.0, sigma=3.0
    ).double()
    torch.nn.init.normal_(head.mlp[2].weight, std=1.0)  # a non-trivial f
    head.requires_grad_(False)
    calib = _calib([0.4, -0.2], [0.8, 0.3], k)
    factory = {
        "future_entropy": lambda ids, mask: [
            sampling.FutureEntropyTilt(sampling.HeadPredictor(head, tap), [0.4, -0.2], [0, 3], k, ids.shape[1])
        ],
        "one_step_lookahead": lambda ids, mask: [
            sampling.FutureEntropyTilt(sampling.LookaheadPredictor(model, mask), [0.8, 0.3], [0, 3], k, ids.shape[1])
        ],
        "mirostat": lambda ids, mask: [sampling.Mirostat(2.0, 0.1)],
    }[sampler]
    tap = sampling.HiddenTap(model)
    try:
        out = sample_with_entropy(
            model,
            tok,
            PROMPTS,
            temperature=1.0,
            max_new_tokens=7,
            batch_size=3,
            seed=0,
            stop_at_eos=False,
            extra_processors=factory,
        )
    finally:
        tap.remove()
    for p, row in zip(PROMPTS, out):
        seq = p + row["token_ids"]
        with torch.no_grad():
            base = model.model(torch.tensor([seq])).last_hidden_state[0]
            logp = torch.log_softmax(model.lm_head(base), -1)
        miro = sampling.Mirostat(2.0, 0.1)
        for t in range(len(row["token_ids"])):
            pos = len(p) - 1 + t
            lp = logp[pos : pos + 1]
            top = lp.topk(k, -1).indices
            a = [0.4, -0.2][t >= 3] if sampler == "future_entropy" else [0.8, 0.3][t >= 3]
            if sampler == "future_entropy":
                q = tilt.tilt_logprobs(lp, head(base[pos : pos + 1], lp.gather(-1, top), top), top, a)
            elif sampler == "one_step_lookahead":
                f = []
                for c in top[0].tolist():
                    with torch.no_grad():
                        nxt = torch.log_softmax(model(torch.tensor([seq[: pos + 1] + [c]])).logits[0, -1], -1)
                    f.append(float(-(nxt.exp() * nxt).sum()))
                q = tilt.tilt_logprobs(lp, torch.tensor([f], dtype=torch.float64), top, a)
            else:
                q = torch.log_softmax(miro.step(lp, torch.tensor([seq[pos]]) if t else None), -1)
            ent = float(-(q.exp() * q.nan_to_num(neginf=0)).sum())
            assert abs(row["entropy"][t] - ent) < 1e-4, (sampler, t)
            assert abs(row["logprob"][t] - float(q[0, row["token_ids"][t]])) < 1e-4
    # scoring the generations as references reproduces the recorded per-step entropies
    pairs = [(p, row["token_ids"]) for p, row in zip(PROMPTS, out)]
    st = {"sampler": sampler, "temperature": 1.0, "slug": f"{sampler}-t1"}
    scored = score_settings(
        model, pairs, [st], batch_size=3, pad_id=tok.pad_token_id, epsilon=0.0, chunk=4, calib=calib, head=head
    )
    for row, s in zip(out, scored):
        np.testing.assert_allclose(s["tf_entropy"][0], row["entropy"], atol=1e-4)
        np.testing.assert_allclose(-s["logloss"][0], row["logprob"], atol=1e-4)


@pytest.mark.parametrize("sampler,param", [("future_entropy", 0.6), ("one_step_lookahead", 0.0), ("mirostat", 3.5)])
def test_a_settings_param_fixes_the_alpha_or_target_in_generation_and_scoring(model64, sampler, param):
    """``param`` of a calibrated setting replaces the fitted alphas (every bucket) or Mirostat's target:
    with f = 0 the tilt at alpha a is temperature 1/(1 + a) on the whole vocabulary (float64 forward);
    alpha 0 on the exact lookahead is the model itself; Mirostat follows the given target; and scoring the
    generated text with the same setting reproduces the recorded entropies."""
    model, tok = model64
    k = 5
    head = predictor.FutureEntropyHead(
        model.get_output_embeddings().weight, rank=4, hidden=8, mu=0.0, sigma=1.0
    ).double()
    for w in head.parameters():
        torch.nn.init.zeros_(w)  # f = mu = 0 for every token
    head.requires_grad_(False)
    calib = _calib([0.4, -0.2], [0.8, 0.3], k)
    if sampler != "mirostat":
        assert sampling.tilt_alphas(sampler, calib, param) == [param, param]
        assert sampling.tilt_alphas(sampler, calib) == ([0.4, -0.2] if sampler == "future_entropy" else [0.8, 0.3])
    assert sampling.mirostat_target(calib, 3.5) == 3.5 and sampling.mirostat_target(calib) == 2.0
    factory = sampling.calibrated_processors(sampler, model, calib, head, param)
    try:
        out = sample_with_entropy(
            model,
            tok,
            PROMPTS,
            temperature=1.0,
            max_new_tokens=7,
            batch_size=3,
            seed=0,
            stop_at_eos=False,
            extra_processors=factory,
        )
    finally:
        for m in model.modules():
            m._forward_hooks.clear()  # the head's hidden-state tap
    for p, row in zip(PROMPTS, out):
        seq = p + row["token_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([seq])).logits[0], -1)
        miro = sampling.Mirostat(3.5, 0.1)
        for t in range(len(row["token_ids"])):
            lp = logp[len(p) - 1 + t : len(p) + t]
            if sampler == "mirostat":
                q = torch.log_softmax(miro.step(lp, torch.tensor([seq[len(p) - 1 + t]]) if t else None), -1)
            else:
                q = torch.log_softmax(lp * (1 + param), -1)
            ent = float(-(q.exp() * q.nan_to_num(neginf=0)).sum())
            assert abs(row["entropy"][t] - ent) < 1e-4, (sampler, t)
    pairs = [(p, row["token_ids"]) for p, row in zip(PROMPTS, out)]
    st = {"sampler": sampler, "temperature": 1.0, "param": param, "slug": f"{sampler}{param:g}-t1"}
    scored = score_settings(
        model, pairs, [st], batch_size=3, pad_id=tok.pad_token_id, epsilon=0.0, chunk=4, calib=calib, head=head
    )
    for row, s in zip(out, scored):
        np.testing.assert_allclose(s["tf_entropy"][0], row["entropy"], atol=1e-4)


def test_mirostat_holds_surprise_near_its_target(model64):
    import copy

    model, tok = model64
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.lm_head.weight.mul_(12.0)  # a peaked model, so truncation has room to work
    free = sample_with_entropy(
        model, tok, PROMPTS * 4, temperature=1.0, max_new_tokens=60, batch_size=12, seed=0, stop_at_eos=False
    )
    free_s = np.mean([-r["logprob"][20:] for r in free])
    target = free_s - 1.0
    out = sample_with_entropy(
        model,
        tok,
        PROMPTS * 4,
        temperature=1.0,
        max_new_tokens=60,
        batch_size=12,
        seed=0,
        stop_at_eos=False,
        extra_processors=lambda i, m: [sampling.Mirostat(target, 0.2)],
    )
    with torch.no_grad():
        surprise = []
        for p, row in zip(PROMPTS * 4, out):
            lp = torch.log_softmax(model(torch.tensor([p + row["token_ids"]])).logits[0], -1)
            pos = np.arange(len(p) - 1, len(p) - 1 + len(row["token_ids"]))
            surprise.append(-lp[pos, row["token_ids"]].numpy()[20:])  # untruncated surprise, after warm-up
    assert abs(np.mean(surprise) - target) < 0.25, (np.mean(surprise), target, free_s)


def test_equal_entropy_comparison_finds_the_matching_temperature():
    # with f = 0 the tilt at alpha is temperature 1 / (1 + alpha): same entropy, same log loss, delta 0
    g = torch.Generator().manual_seed(4)
    n, v, k = 400, 30, 5
    logp = torch.log_softmax(torch.randn(n, v, generator=g, dtype=torch.float64) * 2, -1)
    top = logp.topk(k, -1).indices
    target = torch.multinomial(logp.exp(), 1, generator=g)[:, 0]
    data = {
        "logp": logp,
        "top": top,
        "f_head": torch.zeros(n, k, dtype=torch.float64),
        "target": target,
        "step": torch.arange(n) % 50,
    }
    out = tilt.equal_entropy_comparison(data, {"future_entropy": [{"alpha": 0.3}, {"alpha": 0.3}]}, [0, 25])
    e = out["future_entropy"]
    assert e["temperature"] == pytest.approx(1 / 1.3, abs=1e-5)
    assert abs(e["delta_logloss"]) < 1e-6 and e["entropy"] < e["base_entropy"]
    # a temperature outside the bracket is reported as NaN, not extrapolated
    assert np.isnan(tilt.temperature_at_entropy(logp, target, 1e-9)[0])


def _head(model):
    head = predictor.FutureEntropyHead(
        model.get_output_embeddings().weight, rank=4, hidden=8, mu=6.0, sigma=3.0
    ).double()
    torch.nn.init.normal_(head.mlp[2].weight, std=1.0)
    return head.requires_grad_(False)


@pytest.mark.parametrize(
    "sampler", ["ancestral", "top_p", "typical", "future_entropy", "one_step_lookahead", "mirostat"]
)
def test_the_processor_factory_builds_each_samplers_processors(model64, sampler):
    """calibrated_processors: None for samplers without a predictor; for the calibrated ones, processors
    that generate exactly what the hand-assembled processors of the sampler generate."""
    from entcal.samplers import SAMPLERS

    model, tok = model64
    k, head, calib = 5, _head(model), _calib([0.4, -0.2], [0.8, 0.3], 5)
    factory = sampling.calibrated_processors(sampler, model, calib, head)
    if not SAMPLERS[sampler].needs_predictor:
        assert factory is None
        return
    ids, mask = torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.long)
    procs = factory(ids, mask)
    expected = {
        "future_entropy": (sampling.FutureEntropyTilt, sampling.HeadPredictor),
        "one_step_lookahead": (sampling.FutureEntropyTilt, sampling.LookaheadPredictor),
        "mirostat": (sampling.Mirostat, type(None)),
    }[sampler]
    assert len(procs) == 1 and isinstance(procs[0], expected[0])
    assert isinstance(getattr(procs[0], "predictor", None), expected[1])
    if sampler != "mirostat":
        assert procs[0].alphas.tolist() == [x["alpha"] for x in calib["alpha"][sampler]] and procs[0].k == k
    tap = sampling.HiddenTap(model)
    hand = {
        "future_entropy": lambda i, m: [
            sampling.FutureEntropyTilt(sampling.HeadPredictor(head, tap), [0.4, -0.2], [0, 3], k, i.shape[1])
        ],
        "one_step_lookahead": lambda i, m: [
            sampling.FutureEntropyTilt(sampling.LookaheadPredictor(model, m), [0.8, 0.3], [0, 3], k, i.shape[1])
        ],
        "mirostat": lambda i, m: [sampling.Mirostat(2.0, 0.1)],
    }[sampler]
    try:
        kw = dict(temperature=1.0, max_new_tokens=6, batch_size=3, seed=1, stop_at_eos=False)
        a = sample_with_entropy(model, tok, PROMPTS, extra_processors=factory, **kw)
        b = sample_with_entropy(model, tok, PROMPTS, extra_processors=hand, **kw)
    finally:
        tap.remove()
    for x, y in zip(a, b):
        assert x["token_ids"] == y["token_ids"]
        np.testing.assert_allclose(x["entropy"], y["entropy"], atol=1e-12)
    if sampler == "future_entropy":
        with pytest.raises(ValueError, match="needs the predictor head"):
            sampling.calibrated_processors(sampler, model, calib, None)


@pytest.mark.parametrize("sampler", ["ancestral", "top_k", "future_entropy", "one_step_lookahead", "mirostat"])
def test_forward_tokens_per_step_equal_a_count_of_the_models_inputs(model64, sampler):
    """The registry's forward-token cost per generated token, against the tokens the model's forward
    actually receives (counted by a hook), per step after the first."""
    from entcal.samplers import SAMPLERS

    model, tok = model64
    k, calib = 4, _calib([0.4, -0.2], [0.8, 0.3], 4)
    fed = {"n": 0}

    def count(module, args, kwargs):
        x = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]
        fed["n"] += x.numel()

    hook = model.model.register_forward_pre_hook(count, with_kwargs=True)
    tap_factory = sampling.calibrated_processors(sampler, model, calib, _head(model))
    try:
        counts = []
        for n in (2, 7):
            fed["n"] = 0
            sample_with_entropy(
                model,
                tok,
                [PROMPTS[0]],
                temperature=1.0,
                max_new_tokens=n,
                batch_size=1,
                seed=0,
                stop_at_eos=False,
                sampler=sampler,
                sampler_param=5 if sampler == "top_k" else None,
                extra_processors=tap_factory,
            )
            counts.append(fed["n"])
    finally:
        hook.remove()
    per_step = (counts[1] - counts[0]) / 5
    expected = {"one_step_lookahead": 2 + k}.get(
        sampler, 1
    )  # hand count: the step's token (+ the cache's, + K candidates)
    assert per_step == expected == SAMPLERS[sampler].forward_tokens_per_step(k)


def _tiny_gemma3(window: int):
    """A Gemma-3-shaped model (sliding-window and full-attention layers, as google/gemma-3-270m alternates
    them) with a small window, float64, random weights."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        sliding_window=window,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    return Gemma3ForCausalLM(cfg).double().eval()


def test_candidate_entropies_on_sliding_window_layers_equal_a_full_forward_and_outgrowing_the_window_is_an_error(
    monkeypatch,
):
    monkeypatch.setattr(lookahead, "LOOKAHEAD_LOGITS_BYTES", 4 * 64 * 5)  # 5 candidate rows of logits per block
    model = _tiny_gemma3(window=16)
    ids = torch.tensor([[0, 0, 5, 17, 33, 4, 9, 11, 12], [7, 8, 9, 10, 11, 12, 13, 14, 15]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9])
    out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=True)
    past = out.past_key_values
    # 9 keys + 12 candidates pass the window of 16: the cache must still crop back (this raised before)
    ends = torch.tensor([[4, 9, 9, 6, 7, 8, 9, 9, 5, 9, 9, 9], [2, 5, 9, 9, 3, 4, 9, 9, 9, 6, 7, 8]])
    cands = torch.randint(3, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    for _ in range(2):  # twice: the cache is whole again after the first
        got = lookahead.candidate_entropies(model, past, mask.bool(), ends, cands)
        assert past.get_seq_length() == 9
        _assert_full_forward_entropies(model, ids, mask, ends, cands, got)
    long_ids = torch.arange(3, 23)[None]  # 20 tokens: the sliding layer keeps only 15
    past = model(input_ids=long_ids, use_cache=True).past_key_values
    with pytest.raises(ValueError, match="sliding window of 16 tokens and keeps only the last 15"):
        lookahead.candidate_entropies(
            model, past, torch.ones(1, 20, dtype=torch.bool), torch.full((1, 2), 20), torch.tensor([[3, 4]])
        )


def test_the_fits_work_a_block_of_positions_at_a_time_and_agree_with_whole_tensors(monkeypatch):
    logp, top, f = _rand_case(n=23, v=11, k=4, seed=3)
    targets = torch.randint(11, (23,), generator=torch.Generator().manual_seed(4))
    alpha = torch.linspace(-0.3, 0.8, 23, dtype=torch.float64)
    whole = tilt.tilt_logprobs(logp, f, top, alpha)
    ref_nll = -whole.gather(-1, targets[:, None])[:, 0]
    ref_ent = -(whole.exp() * whole).sum(-1)
    monkeypatch.setattr(tilt, "ROWS", 5)  # 23 positions in five blocks
    torch.testing.assert_close(tilt.tilt_nll(logp, f, top, targets, alpha), ref_nll, atol=1e-12, rtol=0)
    ent, nll = tilt.tilt_stats(logp, f, top, targets, alpha)
    assert abs(ent - float(ref_ent.mean())) < 1e-12 and abs(nll - float(ref_nll.mean())) < 1e-12
    t_ent, t_nll = tilt.mean_stats(logp, targets, 0.7)
    lt = torch.log_softmax(logp / 0.7, -1)
    assert abs(t_ent - float(-(lt.exp() * lt).sum(-1).mean())) < 1e-12
    assert abs(t_nll - float(-lt.gather(-1, targets[:, None]).mean())) < 1e-12


def test_fit_alphas_fits_each_bucket_and_reports_each_fit():
    logp, top, f = _rand_case(n=30, v=9, k=4, seed=6)
    data = {"logp": logp, "top": top, "f_head": f, "target": logp.argmax(-1), "step": torch.arange(30)}
    seen = []
    fits = tilt.fit_alphas(data, ["future_entropy"], [0, 10, 100], (-0.5, 4.0), on_fit=lambda d, n: seen.append((d, n)))
    assert seen == [(1, 10), (2, 30), (3, 30)]  # the third bucket (steps >= 100) has no positions
    b = fits["future_entropy"]
    assert [x["n"] for x in b] == [10, 20, 0] and b[2]["alpha"] == 0.0
    m = torch.arange(10, 30)
    assert b[1]["alpha"] == tilt.fit_alpha(logp[m], f[m], top[m], data["target"][m])["alpha"]
