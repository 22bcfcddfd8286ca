"""Prompt building, paper-exact selection, end ids, padding: checked against hand-built expectations."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from entcal.prompts import end_token_ids, length_order, pad, prefix_ids, select_examples, special_prefix, trim_at_end


def _examples(texts, instructions=None):
    n = len(texts)
    return pd.DataFrame(
        {
            "example_id": range(n),
            "doc_id": [f"d{i}" for i in range(n)],
            "char_start": 0,
            "prefix": "",
            "instruction": instructions or [""] * n,
            "text": texts,
        }
    )


def test_streamed_selection_equals_the_in_memory_one_and_stops_at_n(tiny_tokenizer, tmp_path):
    texts = ["short"] + [("The quick brown fox jumps over the lazy dog. " * (3 + i)) for i in range(600)]
    ex = _examples(texts)
    path = tmp_path / "examples.parquet"
    ex.to_parquet(path, row_group_size=100)  # several record batches
    a = select_examples(tiny_tokenizer, ex, prompt_tokens=8, ref_tokens=30, min_ref_tokens=30, n=500)
    b = select_examples(tiny_tokenizer, path, prompt_tokens=8, ref_tokens=30, min_ref_tokens=30, n=500)
    assert a == b and len(a) == 500
    assert a[0][0] == 1 and [e for e, _, _ in a] == list(range(1, 501))  # file order, the short one skipped


def test_authors_rule_counts_the_bos_in_the_prompt(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    from tokenizers import processors

    bos = tok.convert_tokens_to_ids("<|endoftext|>")
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)]
    )
    text = "To be, or not to be, that is the question. " * 6
    body = tok(text, add_special_tokens=False)["input_ids"]
    assert special_prefix(tok) == [bos]
    paper = select_examples(tok, _examples([text]), prompt_tokens=10, ref_tokens=20, min_ref_tokens=20, n=1)[0]
    authors = select_examples(
        tok, _examples([text]), prompt_tokens=10, ref_tokens=20, min_ref_tokens=20, n=1, text_rules="authors"
    )[0]
    assert paper[1] == [bos] + body[:10] and paper[2] == body[10:30]  # 10 human tokens after the BOS
    assert authors[1] == [bos] + body[:9] and authors[2] == body[9:29]  # encode(doc)[:10], BOS included
    # with an instruction both rules give the template + 10 story tokens
    inst = _examples([text], ["Write a story based on the following prompt: x"])
    assert (
        select_examples(tok, inst, 10, 20, 20, 1)[0]
        == select_examples(tok, inst, 10, 20, 20, 1, text_rules="authors")[0]
    )


def test_a_prompt_never_ends_in_eos(tiny_tokenizer):
    import copy

    from tokenizers import processors

    tok = copy.deepcopy(tiny_tokenizer)
    eos = tok.eos_token_id
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", eos)]
    )
    assert tok("Q: hi", add_special_tokens=True)["input_ids"][-1] == eos
    ids = prefix_ids(tok, instruction="hi")
    assert ids == tok("Q: hi\nA: ", add_special_tokens=False)["input_ids"]  # the appended eos is dropped
    assert special_prefix(tok) == []


def test_end_ids_come_from_the_tokenizer_and_the_generation_config(tiny_tokenizer, tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, tiny_tokenizer.eos_token_id, 9]}))
    assert end_token_ids(tiny_tokenizer, tmp_path) == sorted({tiny_tokenizer.eos_token_id, 7, 9})
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 11}))
    assert end_token_ids(tiny_tokenizer, tmp_path) == sorted({tiny_tokenizer.eos_token_id, 11})
    assert end_token_ids(tiny_tokenizer, tmp_path / "none") == [tiny_tokenizer.eos_token_id]
    assert trim_at_end([3, 4, 9, 5, 7], [7, 9]) == ([3, 4, 9], True)
    assert trim_at_end([3, 4], [7, 9]) == ([3, 4], False)


def test_padding_and_length_order():
    seqs = [[5, 6, 7], [8], [9, 10]]
    ids, mask = pad(seqs, 0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 10]] and mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    ids, mask = pad(seqs, 0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert length_order([[1, 2], [3], [4, 5], [6]]) == [1, 3, 0, 2]  # stable among equal lengths
    assert length_order([[1]] * 5) == [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def instruct_dir(tmp_path_factory, tiny_model_dir):
    """A stand-in instruct model: a chat template and a generation config with two end ids."""
    import shutil

    d = tmp_path_factory.mktemp("instruct")
    for f in tiny_model_dir.iterdir():
        shutil.copy(f, d / f.name)
    return d


def test_generation_stops_at_every_end_id_of_the_generation_config(instruct_dir):
    """Near-greedy decoding; the model's generation config lists two end ids (the tokenizer's eos is a third,
    never sampled here): each generation must stop right after the first of them, keeping it."""
    from entcal.generate import sample_with_entropy
    from entcal.models import load_model

    model, tok = load_model(instruct_dir, "inst", dtype="float64", device="cpu")
    prompts = [[5, 17, 33, 4, 99, 120], [7, 8], [250, 3, 3, 41]]
    kw = dict(temperature=1e-4, max_new_tokens=20, batch_size=3, seed=0)
    greedy = [r["token_ids"] for r in sample_with_entropy(model, tok, prompts, stop_at_eos=False, **kw)]
    a, b = greedy[0][3], greedy[1][5]  # two ids the greedy paths actually produce
    assert tok.eos_token_id not in (a, b)
    (instruct_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": [a, b]}))
    ends = end_token_ids(tok, instruct_dir)
    assert set(ends) == {a, b, tok.eos_token_id}
    out = sample_with_entropy(model, tok, prompts, stop_at_eos=True, end_ids=ends, **kw)
    for g, row in zip(greedy, out):
        cut = [i for i, t in enumerate(g) if t in ends]
        n = cut[0] + 1 if cut else len(g)
        assert row["token_ids"] == g[:n] and row["n_tokens"] == n == len(row["entropy"])
        assert row["stopped_at_eos"] == bool(cut)
    assert out[0]["n_tokens"] <= 4 and out[1]["n_tokens"] <= 6
    # the tokenizer's eos alone would not have stopped them
    plain = sample_with_entropy(model, tok, prompts, stop_at_eos=True, **kw)
    assert [r["token_ids"] for r in plain] == greedy


def test_planned_batches_keep_samples_reproducible(tiny_model_dir):
    """Batches of different sizes over length-sorted prompts: each batch is seeded by its offset, so the same
    plan gives the same samples, and an entropy recorded per step matches a float64 recomputation."""
    from entcal.generate import sample_with_entropy
    from entcal.models import load_model

    model, tok = load_model(tiny_model_dir, "tiny", dtype="float64", device="cpu")
    prompts = [[5, 6], [7, 8, 9], [1, 2, 3, 4], [10, 11, 12, 13, 14], [3] * 6]
    batches = [slice(0, 2), slice(2, 3), slice(3, 5)]
    kw = dict(temperature=1.0, max_new_tokens=6, batch_size=0, seed=3, stop_at_eos=False, batches=batches)
    a, b = sample_with_entropy(model, tok, prompts, **kw), sample_with_entropy(model, tok, prompts, **kw)
    assert [r["token_ids"] for r in a] == [r["token_ids"] for r in b]
    for p, row in zip(prompts, a):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p + row["token_ids"]])).logits[0], -1)
        pos = np.arange(len(p) - 1, len(p) - 1 + row["n_tokens"])
        np.testing.assert_allclose(row["entropy"], -(logp.exp() * logp).sum(-1)[pos].numpy(), atol=1e-6)


def _tokenizers_of_the_grid_kinds(texts):
    """Three pre-tokenizer kinds trained here: GPT-2/Pythia byte-level, Llama 3/Qwen2.5 split regex (digits in
    groups of three), Llama 2 sentencepiece-style metaspace (trained per word, encoded without splitting)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from entcal.tokenization import train_bpe

    out = {"byte_level": train_bpe(texts, vocab_size=800)}
    qwen = Tokenizer(models.BPE())
    pat = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
        r"|\s+(?!\S)|\s+"
    )
    qwen.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pat), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    qwen.decoder = decoders.ByteLevel()
    qwen.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=800, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    out["split_regex"] = PreTrainedTokenizerFast(tokenizer_object=qwen)
    sp = Tokenizer(models.BPE(byte_fallback=True))
    sp.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    sp.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    sp.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=800, special_tokens=["<unk>"]))
    sp.pre_tokenizer = None  # as Llama 2's tokenizer.json: the normalizer marks spaces, BPE sees the whole text
    out["metaspace"] = PreTrainedTokenizerFast(tokenizer_object=sp)
    return out


def test_tokenising_a_head_gives_the_first_tokens_of_the_whole_text():
    import random
    import sysconfig
    from pathlib import Path

    from entcal.prompts import tokenize_heads

    root = Path(sysconfig.get_paths()["stdlib"])
    code = [p.read_text()[:20000] for p in sorted(root.glob("*.py"))[:24]]
    prose = [" ".join(c.replace('"""', " ").split()) for c in code]  # runs of words, numbers, punctuation
    texts = code + prose
    rng = random.Random(0)
    for kind, tok in _tokenizers_of_the_grid_kinds(texts).items():
        docs = [t[rng.randrange(len(t) // 2) :] for t in texts]
        for need in (5, 150, 2000):
            heads = tokenize_heads(tok, docs, need, chars_per_token=rng.choice([0.5, 2.0, 6.0]))
            for d, h in zip(docs, heads):
                full = tok(d, add_special_tokens=False)["input_ids"]
                assert len(h) >= min(need, len(full)), kind
                assert h == full[: len(h)], (kind, need)
    # a cut inside a word would not do: the test above can tell
    tok = _tokenizers_of_the_grid_kinds(texts)["byte_level"]
    import entcal.prompts as pr

    real = pr._cut
    try:
        pr._cut = lambda text, chars: min(len(text), chars)
        bad = tokenize_heads(tok, docs, 150, chars_per_token=1.3)
    finally:
        pr._cut = real
    assert any(h != tok(d, add_special_tokens=False)["input_ids"][: len(h)] for d, h in zip(docs, bad))
