"""GPU rehearsal: the grid's generation and scoring at real model shapes, against the hardware's limits.

    python benchmarks/gpu.py       # on a GPU: four grid shapes, P=128, L=2048, bf16 (not yet timed on a GPU)
    python benchmarks/gpu.py --tiny            # anywhere, seconds: the same code at toy sizes (what CI runs)
    # the grid's GPU-hours from it:
    python -m entcal.plan config/config.yaml --measured benchmarks/results/gpu_throughput.csv

Each model is built from its architecture facts (``config/model_shapes.yaml``, as the model cards
state them) with random weights, in bf16 on the GPU: nothing is downloaded. The final norm is
rescaled so next-token distributions have a realistic entropy (``--logit-std``; random weights
otherwise give almost uniform distributions, and precision differences would be meaningless).
Per model, at the batch the memory plan (:mod:`entcal.plan`) picks for P + L tokens:

- ``generation``: our transformers path (``sample_with_entropy``) with the entropy recorder, P
  prompt tokens, L new tokens per row: tokens/s, peak memory against the plan, and the fraction of
  the roofline (weights + every row's KV cache read per decode step, and the prefill's FLOPs, at
  the GPU's datasheet bandwidth and bf16 peak) that the measured time reaches;
- ``generation_no_recorder``: the same without the recorder, so the recorder's cost is a ratio;
- ``scoring``: teacher-forced log loss and entropy of P + L-token sequences with the chunked
  vocabulary projection, at the plan's sequences per pass: tokens/s and MFU (2 x parameters +
  attention FLOPs per token over the bf16 peak);
- ``entropy_pass``: the exact entropy pass that follows vLLM sampling, over the generated tokens;
- ``precision_*``: entropy and log loss of the same sampled tokens under bf16, float32 and NF4 (when
  bitsandbytes imports): their means and mean absolute differences from float32 in nats.

``d_entropy`` of the ``entropy_pass`` row is the largest difference between the recorder's entropy
and the pass's for the same tokens (the two routes must agree).

Prints one table with the hardware named and writes it as CSV (``--csv``, default
``benchmarks/results/gpu.csv``); columns are documented in docs/benchmarks.md, "GPU rehearsal".
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

DEFAULT_MODELS = ["qwen25_0_5b", "qwen25_1_5b", "llama3_3b", "llama2_7b"]

# datasheet peaks (dense bf16 TFLOP/s, memory GB/s) by a substring of torch.cuda.get_device_name()
GPU_PEAKS = {
    "H200": (989.0, 4800.0),
    "H100 NVL": (835.0, 3900.0),
    "H100 PCIe": (756.0, 2000.0),
    "H100": (989.0, 3350.0),
    "A100": (312.0, 2039.0),
    "L40S": (362.0, 864.0),
}

COLUMNS = [
    "hardware",
    "model",
    "params_b",
    "measure",
    "batch",
    "prompt_tokens",
    "new_tokens",
    "tokens",
    "seconds",
    "tokens_per_s",
    "peak_gb",
    "plan_gb",
    "peak_vs_plan",
    "limit_fraction",
    "mfu",
    "dtype",
    "mean_entropy",
    "mean_logloss",
    "d_entropy",
    "d_logloss",
    "note",
]


def hardware(device) -> tuple[str, float | None, float | None]:
    """(name, bf16 TFLOP/s, GB/s) of the device; peaks are None where not known (CPUs)."""
    import torch

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (tf, bw) in GPU_PEAKS.items():
            if key in name:
                return name, tf, bw
        return name, None, None
    cpu = platform.processor() or "cpu"
    try:
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({os.cpu_count()} cores)", None, None


def tiny_facts(facts: dict) -> dict:
    """The same architecture family at toy size (CPU mode): a few layers, narrow, small vocabulary,
    keeping grouped-query attention and tied or untied heads as the real model has them. Every linear map's
    output is a multiple of 32 wide: bitsandbytes' NF4 kernel for CPUs with AVX-512 BF16 needs that (a 16-wide
    key projection stopped the NF4 route on such a CPU)."""
    heads, kv = facts["num_attention_heads"], facts.get("num_key_value_heads", facts["num_attention_heads"])
    group = max(1, heads // kv)
    return {
        **facts,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": max(1, 4 // min(group, 4)),
        "head_dim": 32,
        "vocab_size": 512,
    }


def build_random(facts: dict, dtype, device, logit_std: float, seed: int = 0):
    """A causal LM from config.json facts with random weights, on ``device`` in ``dtype``; the final
    norm is rescaled so that logits have about ``logit_std`` standard deviation."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    facts = dict(facts)
    kind = facts.pop("model_type")
    cfg = AutoConfig.for_model(
        kind, **facts, max_position_embeddings=8192, bos_token_id=1, eos_token_id=2, pad_token_id=0
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.eval()
    with torch.no_grad():
        ids = torch.randint(3, cfg.vocab_size, (1, 32), device=device)
        std = float(model(ids).logits.float().std())
        base = model.base_model  # scale the final norm, not the head: a tied head would also scale the inputs
        norm = getattr(base, "norm", None) or getattr(base, "final_layer_norm")
        norm.weight.mul_(logit_std / max(std, 1e-6))
    return model, cfg


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device) -> float:
    import torch

    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")


def bench_model(name: str, facts: dict, a, device, hw) -> list[dict]:
    import numpy as np
    import torch

    from entcal.generate import sample_with_entropy
    from entcal.memory import GB, Budget, ModelShape, plan_generation, plan_scoring
    from entcal.roofline import GPUSpec, decode_seconds, forward_seconds
    from entcal.score import score_settings
    from entcal.vllm_backend import entropy_pass

    hw_name, tflops, bw = hw
    dtype = torch.bfloat16 if a.dtype == "bfloat16" else torch.float32
    shape = ModelShape.from_config(facts)
    model, cfg = build_random(facts, dtype, device, a.logit_std, a.seed)
    P, L = a.prompt_tokens, a.new_tokens
    if device.type == "cuda":
        total_gb = torch.cuda.get_device_properties(device).total_memory / GB
        budget = Budget(gpus=1, gpu_memory_gb=total_gb)
    else:
        budget = Budget(gpus=1, gpu_memory_gb=8.0, utilization=1.0, overhead_gb=0.5)
    gen_plan = plan_generation(shape, budget, P + L, cap=a.max_batch, prompt_len=P, dtype=a.dtype)
    sc_plan = plan_scoring(shape, budget, P + L, cap=a.max_batch, dtype=a.dtype)
    B, Bs, chunk = max(gen_plan["batch"], 1), max(sc_plan["batch"], 1), sc_plan["chunk"]
    overhead = budget.overhead_gb  # CUDA context and workspaces: not in max_memory_allocated
    roof = GPUSpec(name=hw_name, bf16_tflops=tflops or 1.0, bandwidth_gbs=bw or 1.0, mfu=1.0, bandwidth_efficiency=1.0)
    tok = SimpleNamespace(eos_token_id=cfg.eos_token_id, pad_token_id=0, bos_token_id=cfg.bos_token_id)
    g = torch.Generator().manual_seed(a.seed)
    prompts = [torch.randint(3, cfg.vocab_size, (P,), generator=g).tolist() for _ in range(B)]
    base = {
        "hardware": hw_name,
        "model": name,
        "params_b": round(shape.n_params() / 1e9, 3),
        "prompt_tokens": P,
        "new_tokens": L,
        "dtype": a.dtype,
    }
    rows = []

    def generate(record: bool):
        reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        out = sample_with_entropy(
            model,
            tok,
            prompts,
            temperature=1.0,
            max_new_tokens=L,
            batch_size=B,
            seed=a.seed,
            stop_at_eos=False,
            record=record,
        )
        sync(device)
        return out, time.perf_counter() - t0, peak_gb(device)

    generate(False) if a.warmup else None  # kernels, allocator
    timings = {}
    for record in (True, False):
        out, sec, peak = generate(record)
        timings[record] = (out, sec)
        limit = decode_seconds(shape, roof, B, P, L, a.dtype) + forward_seconds(shape, roof, B * P, P / 2)
        plan_gb = (gen_plan["peak"] / GB) - overhead
        rows.append(
            {
                **base,
                "measure": "generation" if record else "generation_no_recorder",
                "batch": B,
                "tokens": B * L,
                "seconds": sec,
                "tokens_per_s": B * L / sec,
                "peak_gb": peak,
                "plan_gb": plan_gb,
                "peak_vs_plan": peak / plan_gb,
                "limit_fraction": limit / sec if bw else float("nan"),
                "note": "transformers generate, entropy recorded in the sampling pass"
                if record
                else "transformers generate, no recorder",
            }
        )
    generated = [r["token_ids"] for r in timings[True][0]]
    setting = {"sampler": "ancestral", "temperature": 1.0, "param": None, "slug": "t1.0"}

    # scoring: teacher-forced passes over P + L tokens, Bs sequences at a time
    pairs = [(p, t) for p, t in zip(prompts, generated)]
    reps = max(1, math.ceil(Bs / len(pairs)))
    spairs = (pairs * reps)[: max(Bs, 1)]
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    scored = score_settings(model, spairs, [setting], Bs, 0, 0.0, chunk=chunk)
    sync(device)
    sec = time.perf_counter() - t0
    ntok = sum(len(p) + len(r) for p, r in spairs)
    flops = ntok * shape.flops_per_token((P + L) / 2)
    plan_gb = sc_plan["peak"] / GB - overhead
    peak = peak_gb(device)
    rows.append(
        {
            **base,
            "measure": "scoring",
            "batch": Bs,
            "tokens": ntok,
            "seconds": sec,
            "tokens_per_s": ntok / sec,
            "peak_gb": peak,
            "plan_gb": plan_gb,
            "peak_vs_plan": peak / plan_gb,
            "mfu": flops / sec / (tflops * 1e12) if tflops else float("nan"),
            "note": f"teacher-forced log loss + entropy, vocabulary chunk {chunk}",
        }
    )

    # the exact entropy pass after vLLM-style sampling: the same tokens, one teacher-forced pass
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    passed = entropy_pass(model, prompts, generated, setting, batch_size=Bs, pad_id=0)
    sync(device)
    sec = time.perf_counter() - t0
    ntok = sum(len(p) + len(r) for p, r in pairs)
    peak = peak_gb(device)
    rows.append(
        {
            **base,
            "measure": "entropy_pass",
            "batch": Bs,
            "tokens": ntok,
            "seconds": sec,
            "tokens_per_s": ntok / sec,
            "peak_gb": peak,
            "plan_gb": plan_gb,
            "peak_vs_plan": peak / plan_gb,
            "mfu": ntok * shape.flops_per_token((P + L) / 2) / sec / (tflops * 1e12) if tflops else float("nan"),
            "note": "two-phase path: entropy of sampled tokens after vLLM or the NF4 pass",
        }
    )
    rec_ent = np.concatenate([r["entropy"] for r in timings[True][0]]).astype(np.float64)
    pass_ent = np.concatenate([r["entropy"] for r in passed]).astype(np.float64)
    rows[-1]["d_entropy"] = float(np.abs(rec_ent - pass_ent).max())  # same tokens, same distribution: ~0
    assert len(scored) == len(spairs)

    # precision: the same tokens' entropy and log loss in bf16, float32, NF4
    rows += precision_rows(model, pairs[: a.precision_rows], setting, base, device)
    return rows


def precision_rows(model, pairs, setting, base, device) -> list[dict]:
    """Mean entropy and log loss of the same tokens under the model's dtype, float32 and NF4 (NF4 only
    where bitsandbytes imports; the model is saved once and reloaded quantised)."""
    import numpy as np
    import torch

    from entcal.score import score_settings

    def stats(m):
        s = score_settings(m, pairs, [setting], len(pairs), 0, 0.0)
        return (
            np.concatenate([x["tf_entropy"][0] for x in s]).astype(np.float64),
            np.concatenate([x["logloss"][0] for x in s]).astype(np.float64),
        )

    got = {str(next(model.parameters()).dtype).removeprefix("torch."): stats(model)}
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        m32 = _load_plain(tmp, torch.float32, device)
        got["float32"] = stats(m32)
        del m32
        reset_peak(device)
        try:
            import bitsandbytes  # noqa: F401
            from transformers import AutoModelForCausalLM, BitsAndBytesConfig

            q = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
            m4 = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=q, device_map={"": device}).eval()
            got["nf4"] = stats(m4)
            del m4
        except ImportError:
            pass
    ref_e, ref_l = got["float32"]
    rows = []
    for prec, (e, ll) in got.items():
        rows.append(
            {
                **base,
                "measure": f"precision_{prec}",
                "batch": len(pairs),
                "tokens": len(e),
                "dtype": prec,
                "mean_entropy": e.mean(),
                "mean_logloss": ll.mean(),
                "d_entropy": np.abs(e - ref_e).mean(),
                "d_logloss": np.abs(ll - ref_l).mean(),
                "note": f"same tokens; pooled EntCE shift vs float32 "
                f"{(e.mean() - ll.mean()) - (ref_e.mean() - ref_l.mean()):+.2e} nats",
            }
        )
    return rows


def _load_plain(path, dtype, device):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()


def main(argv=None) -> list[dict]:
    import pandas as pd
    import torch
    import yaml

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="toy sizes on any device (CI): 2 layers, 128 wide, P=8, L=16")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="names in --shapes")
    ap.add_argument("--shapes", default=str(ROOT / "config" / "model_shapes.yaml"))
    ap.add_argument("--prompt-tokens", type=int, default=None, help="P (default 128; 8 with --tiny)")
    ap.add_argument("--new-tokens", type=int, default=None, help="L (default 2048; 16 with --tiny)")
    ap.add_argument("--max-batch", type=int, default=128, help="cap on the planned batch (the grid's batch_size)")
    ap.add_argument("--dtype", default=None, help="bfloat16 (GPU default) | float32 (CPU default)")
    ap.add_argument("--precision-rows", type=int, default=8, help="sequences in the precision comparison")
    ap.add_argument("--logit-std", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-warmup", dest="warmup", action="store_false")
    ap.add_argument("--csv", default=str(ROOT / "benchmarks" / "results" / "gpu.csv"))
    a = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    a.prompt_tokens = a.prompt_tokens or (8 if a.tiny else 128)
    a.new_tokens = a.new_tokens or (16 if a.tiny else 2048)
    a.dtype = a.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    if a.tiny:
        a.max_batch = min(a.max_batch, 4)
        a.precision_rows = min(a.precision_rows, 2)
    if device.type == "cpu" and not a.tiny:
        print("no GPU: add --tiny for the CPU mode (full-size models on a CPU would take hours)", file=sys.stderr)
        raise SystemExit(2)
    table = yaml.safe_load(Path(a.shapes).read_text())
    hw = hardware(device)
    rows = []
    for name in a.models.split(","):
        if name not in table:
            raise SystemExit(f"unknown model {name!r}: not in {a.shapes}")
        facts = tiny_facts(table[name]) if a.tiny else table[name]
        rows += bench_model(name, facts, a, device, hw)
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_colwidth", 90)
    print(
        f"hardware: {hw[0]}; peaks {hw[1]} bf16 TFLOP/s, {hw[2]} GB/s; torch {torch.__version__}"
        + (" (tiny CPU mode: toy shapes, no peaks)" if a.tiny else "")
    )
    show = df.drop(columns=["hardware"]).round(3)
    print(show.to_string(index=False))
    Path(a.csv).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.csv, index=False)
    wide = measured_throughput(df)
    wide.to_csv(Path(a.csv).with_name(Path(a.csv).stem + "_throughput.csv"), index=False)
    print(f"\nwrote {a.csv} and {Path(a.csv).stem}_throughput.csv (for python -m entcal.plan --measured)")
    return rows


def measured_throughput(df):
    """One row per model: generation and scoring tokens/s, the columns ``entcal.plan --measured`` reads."""
    import pandas as pd

    out = []
    for model, g in df.groupby("model", sort=False):
        by = g.set_index("measure")["tokens_per_s"]
        out.append(
            {"model": model, "generation_tokens_per_s": by.get("generation"), "scoring_tokens_per_s": by.get("scoring")}
        )
    return pd.DataFrame(out)


if __name__ == "__main__":
    main()
