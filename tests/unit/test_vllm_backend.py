"""The vLLM backend's exact entropy pass equals the in-loop recording of the HF backend; its glue
runs against a stand-in for vLLM's interface (no vLLM, no GPU here)."""

import json
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from entcal import vllm_backend as vb
from entcal.generate import sample_with_entropy
from entcal.models import load_model

PROMPTS = [[5, 17, 33, 4, 99, 120], [7, 8], [250, 3, 3, 41]]


@pytest.mark.parametrize("setting", [
    {"sampler": "ancestral", "temperature": 0.7, "param": None},
    {"sampler": "top_p", "temperature": 1.0, "param": 0.9},
    {"sampler": "min_p", "temperature": 0.9, "param": 0.05},
])  # fmt: skip
def test_entropy_pass_equals_the_in_loop_recording_for_the_same_tokens(tiny_model_dir, setting):
    model, tok = load_model(tiny_model_dir, "tiny", dtype="float32", device="cpu")
    rows = sample_with_entropy(model, tok, PROMPTS, temperature=setting["temperature"], max_new_tokens=15, batch_size=3,
                               seed=1, stop_at_eos=False, sampler=setting["sampler"], sampler_param=setting["param"])  # fmt: skip
    again = vb.entropy_pass(model, PROMPTS, [r["token_ids"] for r in rows], setting, batch_size=2, pad_id=tok.pad_token_id)
    for r, a in zip(rows, again):
        assert a["token_ids"] == r["token_ids"]
        np.testing.assert_allclose(a["entropy"], r["entropy"], atol=2e-5)
        np.testing.assert_allclose(a["logprob"], r["logprob"], atol=2e-5)


def test_backend_choice():
    assert vb.choose_backend("hf", "ancestral") == "hf"
    assert vb.choose_backend("auto", "typical") == "hf"  # vLLM has no typical sampling
    assert vb.choose_backend("vllm", "future_entropy") == "hf"
    if vb.vllm_unusable():
        assert vb.choose_backend("auto", "ancestral") == "hf"


@pytest.fixture
def fake_vllm(monkeypatch, tiny_model_dir):
    """A stand-in with vLLM's interface: LLM(...).generate(prompts, params) samples with our HF model."""
    calls = {}
    model, tok = load_model(tiny_model_dir, "tiny", dtype="float32", device="cpu")

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            calls["llm"] = kw

        def generate(self, prompts, params):
            calls["params"] = [p.kw for p in params]
            outs = []
            for pr, sp in zip(prompts, params):
                g = torch.Generator().manual_seed(sp.kw["seed"])
                ids = list(pr["prompt_token_ids"])
                new = []
                for _ in range(sp.kw["max_tokens"]):
                    with torch.no_grad():
                        logits = model(torch.tensor([ids + new])).logits[0, -1] / sp.kw["temperature"]
                    new.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=g)))
                outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=new)]))
            return outs

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    monkeypatch.setattr(vb, "vllm_unusable", lambda: None)
    return calls


def test_vllm_generation_file_through_the_stand_in(fake_vllm, tiny_model_dir, tmp_path):
    from conftest import TEXTS

    from entcal.jobs import generate_file

    from conftest import make_prompts

    ex = pd.DataFrame({"example_id": range(3), "doc_id": "d", "char_start": 0, "prefix": "", "instruction": "",
                       "text": [t[:200] for t in TEXTS]})  # fmt: skip
    prompts = make_prompts(tiny_model_dir, ex, tmp_path / "prompts.parquet", prompt_tokens=6, max_new_tokens=7,
                           min_reference_tokens=4, n_prompts=3)  # fmt: skip
    out = tmp_path / "g.parquet"
    generate_file(str(tiny_model_dir), "tiny", str(prompts), str(out), sampler="ancestral", temperature=0.8,
                  max_new_tokens=7, batch_size=2, seed=0, stop_at_eos=False, dtype="float32", device="cpu",
                  backend="vllm", gpus=2, shard_size=2)  # fmt: skip
    assert fake_vllm["llm"]["tensor_parallel_size"] == 2
    assert fake_vllm["llm"]["max_model_len"] == 256  # the model's own context (config.json), under 4096
    assert [p["temperature"] for p in fake_vllm["params"]] == [0.8]  # the last shard's single request
    df = pd.read_parquet(out)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["backend"] == "vllm" and meta["shards"] == 2 and len(df) == 3
    # the recorded entropies are those of the T = 0.8 distribution at the generated tokens
    model, tok = load_model(tiny_model_dir, "tiny", dtype="float32", device="cpu")
    from entcal.prompts import load_prompts

    for (_, p, _), r in zip(load_prompts(prompts), df.itertuples()):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p + list(r.token_ids)])).logits[0] / 0.8, -1)
        pos = np.arange(len(p) - 1, len(p) - 1 + r.n_tokens)
        np.testing.assert_allclose(r.entropy, -(logp.exp() * logp).sum(-1)[pos].numpy(), atol=1e-5)
        np.testing.assert_allclose(r.logprob, logp[pos, list(r.token_ids)].numpy(), atol=1e-5)
    assert not (tmp_path / "g.parquet.tokens.shards").exists()  # token shards are cleaned up with the others

