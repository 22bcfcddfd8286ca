"""precision: paper — the authors' one double-quantised NF4 model (bitsandbytes, here on the CPU) gives the
entropy of every generated step and the reference log loss; precision: exact records in the sampling pass."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def sharp_model_dir(tmp_path_factory, tiny_tokenizer):
    """A random model with weights large enough that its distributions are far from uniform (so that
    4-bit weights visibly change them)."""
    from entcal.models import build_model

    d = tmp_path_factory.mktemp("sharp")
    model = build_model(
        {"type": "llama", "hidden_size": 64, "layers": 2, "heads": 2, "ffn": 128},
        vocab_size=len(tiny_tokenizer),
        max_positions=256,
        seed=4,
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) or isinstance(m, torch.nn.Embedding):
                m.weight.mul_(8.0)
    model.save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def examples(tmp_path_factory, sharp_model_dir):
    """The prompts file of 5 examples."""
    from conftest import TEXTS, make_prompts

    d = tmp_path_factory.mktemp("ex")
    texts = [t[i : i + 200] for t in TEXTS for i in (0, 40)]
    ex = pd.DataFrame(
        {
            "example_id": range(len(texts)),
            "doc_id": "d",
            "char_start": 0,
            "prefix": "",
            "instruction": "",
            "text": texts,
        }
    )
    return make_prompts(
        sharp_model_dir,
        ex,
        d / "prompts.parquet",
        prompt_tokens=6,
        max_new_tokens=8,
        min_reference_tokens=4,
        n_prompts=5,
    )


def _kw(model_dir, examples, out, precision):
    return dict(
        model_dir=str(model_dir),
        model_name="tiny",
        prompts_path=str(examples),
        out_path=str(out),
        sampler="ancestral",
        temperature=0.9,
        max_new_tokens=8,
        batch_size=2,
        seed=2,
        stop_at_eos=False,
        dtype="float32",
        device="cpu",
        shard_size=2,
        precision=precision,
    )


def _nf4_logp(model_dir, seq, tau):
    """An independent pass: the NF4 model as transformers loads it, one unpadded sequence, float64 softmax."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    m = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=q, device_map={"": "cpu"})
    with torch.no_grad():
        return torch.log_softmax(m(torch.tensor([seq])).logits[0].double() / tau, -1)


def test_paper_precision_samples_in_dtype_and_measures_with_the_nf4_model(sharp_model_dir, examples, tmp_path):
    from entcal.generation_jobs import generate_file

    exact, paper = tmp_path / "exact.parquet", tmp_path / "paper.parquet"
    generate_file(**_kw(sharp_model_dir, examples, exact, "exact"))
    generate_file(**_kw(sharp_model_dir, examples, paper, "paper"))
    a, b = pd.read_parquet(exact), pd.read_parquet(paper)
    assert json.loads(paper.with_suffix(".json").read_text())["precision"] == "paper"
    assert json.loads(exact.with_suffix(".json").read_text())["precision"] == "exact"
    # the same tokens: sampled by the same model in dtype, same seeds
    assert a["token_ids"].map(list).tolist() == b["token_ids"].map(list).tolist()
    assert not paper.with_name(paper.name + ".tokens.shards").exists()  # the sampling phase's shards are gone
    from entcal.prompts import load_prompts

    prompts = {e: p for e, p, _ in load_prompts(examples)}
    diffs = []
    for r_a, r_b in zip(a.itertuples(), b.itertuples()):
        prompt_len = r_b.prompt_len
        prompt = prompts[r_b.example_id]
        assert len(prompt) == prompt_len
        logp = _nf4_logp(sharp_model_dir, prompt + list(r_b.token_ids), 0.9)
        pos = np.arange(prompt_len - 1, prompt_len - 1 + r_b.n_tokens)
        ent = -(logp.exp() * logp).sum(-1)[pos].numpy()
        np.testing.assert_allclose(r_b.entropy, ent, atol=1e-4)
        np.testing.assert_allclose(r_b.logprob, logp[pos, list(r_b.token_ids)].numpy(), atol=1e-4)
        diffs.append(np.abs(np.asarray(r_a.entropy) - np.asarray(r_b.entropy)).max())
    print("max |entropy exact - entropy paper| per generation:", diffs)
    assert max(diffs) > 1e-2  # 4-bit weights do change the entropies: the two modes are different measurements


def test_paper_precision_scores_references_with_the_nf4_model(sharp_model_dir, examples, tmp_path):
    from entcal.score_jobs import score_file

    settings = [{"sampler": "ancestral", "temperature": 1.0, "slug": "ancestral-t1"}]
    kw = dict(
        model_dir=str(sharp_model_dir),
        model_name="tiny",
        prompts_path=str(examples),
        settings=settings,
        batch_size=3,
        dtype="float32",
        device="cpu",
    )
    score_file(out_path=str(tmp_path / "p.parquet"), precision="paper", **kw)
    score_file(out_path=str(tmp_path / "e.parquet"), precision="exact", **kw)
    p, e = pd.read_parquet(tmp_path / "p.parquet"), pd.read_parquet(tmp_path / "e.parquet")
    assert json.loads((tmp_path / "p.json").read_text())["precision"] == "paper"
    from entcal.prompts import load_prompts

    chosen = {i: (pr, r) for i, pr, r in load_prompts(examples)}
    for row in p.itertuples():
        pr, ref = chosen[row.example_id]
        logp = _nf4_logp(sharp_model_dir, pr + ref, 1.0)
        pos = np.arange(len(pr) - 1, len(pr) - 1 + len(ref))
        np.testing.assert_allclose(row.logloss, -logp[pos, ref].numpy(), atol=1e-4)
    assert max(np.abs(np.asarray(x) - np.asarray(y)).max() for x, y in zip(p["logloss"], e["logloss"])) > 1e-2
