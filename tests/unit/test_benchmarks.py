"""The benchmarks run at a tiny size and their kernels agree with the references (no timing asserted)."""

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmarks_run_tiny_and_their_outputs_match(tmp_path):
    bench = _load()
    rows = bench.main(["--tiny", "--no-workflow", "--out", str(tmp_path / "b.json")])
    by = {(r["benchmark"], r["measure"]): r for r in rows}
    # same-pass and two-pass give the same entropies for the same tokens; two-pass reads each token twice
    assert by[("1 same-pass entropy", "max abs entropy difference (nats)")]["met"]
    assert by[("1 same-pass entropy", "forward tokens")]["ratio"] >= 1.9
    # both kernel variants equal float64
    assert by[("2 chunked kernel", "max abs error vs float64 (nats), full / chunked")]["ratio"] < 1e-5
    # the blocked entropy pass equals float64
    assert by[("7 entropy pass", "max abs error vs float64 (nats), textbook / ours")]["met"]
    # top-p without a full sort keeps the full sort's set and draws the same tokens
    assert by[("9 top-p", "kept sets equal to a full sort of the same definition")]["met"]
    assert by[("9 top-p", "same tokens drawn with the same seeds")]["met"]
    # the allocator settings change where blocks come from, never what is sampled
    assert by[("4 allocator", "same sampled tokens")]["met"]
    assert (tmp_path / "b.json").is_file()


def test_chunked_kernel_equals_full_materialisation_and_float64():
    import torch

    from entcal.metrics import projected_logloss_entropy

    g = torch.Generator().manual_seed(3)
    h, w = torch.randn(37, 8, generator=g, dtype=torch.float64), torch.randn(50, 8, generator=g, dtype=torch.float64)
    y = torch.randint(50, (37,), generator=g)
    full = projected_logloss_entropy(h, w, y, temperature=0.7, chunk=None)
    for chunk in (1, 5, 37, 100):
        got = projected_logloss_entropy(h, w, y, temperature=0.7, chunk=chunk)
        torch.testing.assert_close(got, full, atol=1e-12, rtol=0)
    logp = torch.log_softmax(h @ w.T / 0.7, -1)  # independent closed form
    torch.testing.assert_close(full[0], -logp[torch.arange(37), y], atol=1e-12, rtol=0)
    torch.testing.assert_close(full[1], -(logp.exp() * logp).sum(-1), atol=1e-12, rtol=0)


def test_gpu_rehearsal_runs_on_cpu_at_toy_sizes_and_its_routes_agree(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    rows = gpu.main(["--tiny", "--models", "llama3_1b", "--csv", str(tmp_path / "gpu.csv")])
    by = {r["measure"]: r for r in rows}
    assert {"generation", "generation_no_recorder", "scoring", "entropy_pass", "precision_float32"} <= set(by)
    # the recorder and the teacher-forced pass measure the same distribution for the same tokens
    assert by["entropy_pass"]["d_entropy"] < 1e-4
    gen = by["generation"]
    assert gen["tokens"] == gen["batch"] * 16 and gen["tokens_per_s"] > 0
    # the plan's batch at the toy shape and the CPU budget is the cap
    assert gen["batch"] == 4
    # tokens scored: prompt + generated tokens of every sequence
    assert by["scoring"]["tokens"] == by["scoring"]["batch"] * (8 + 16)
    assert by["precision_float32"]["d_entropy"] == 0.0 and 0 < by["precision_float32"]["mean_entropy"] < np.log(512)
    # the throughput file is what `python -m entcal.plan --measured` reads
    import pandas as pd

    from entcal.memory import ModelShape
    from entcal.plan import VLLM_START_SECONDS, job_rows
    from entcal.roofline import GPUSpec

    wide = pd.read_csv(tmp_path / "gpu_throughput.csv")
    assert list(wide.columns) == ["model", "generation_tokens_per_s", "scoring_tokens_per_s"]
    cfg = {
        "generation": {"max_new_tokens": 16, "n_prompts": 10**7, "prompt_tokens": 8, "batch_size": 4},
        "models": {"llama3_1b": {"source": "hub", "gpus": 1, "instruct": False}},
        "samplers": {"base": [{"sampler": "ancestral", "temperature": 1.0}]},
        "datasets": {"d": {}},
        "analysis": {"max_len": 16},
    }
    shapes = {
        "llama3_1b": ModelShape.from_config(
            gpu.tiny_facts(
                __import__("yaml").safe_load((ROOT / "config" / "model_shapes.yaml").read_text())["llama3_1b"]
            )
        )
    }
    m = {r["model"]: r for r in wide.to_dict("records")}
    (row,) = job_rows(cfg, shapes, GPUSpec(), measured=m)
    # vLLM's generation with the entropy in its sampler (and its engine's start), and scoring at the scoring rate
    expected = (
        1e7 * 16 / m["llama3_1b"]["generation_tokens_per_s"]
        + VLLM_START_SECONDS
        + 1e7 * (9 + 16) / m["llama3_1b"]["scoring_tokens_per_s"]
    ) / 3600
    assert expected > 1 and row["gpu_hours"] == round(expected, 2)
