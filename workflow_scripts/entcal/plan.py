"""What the grid costs, and whether every job fits: ``python -m entcal.plan config/config.yaml``.

For every model x dataset of a configuration, the memory plan of its jobs (:mod:`entcal.memory`: batch,
scoring chunk, peak memory per GPU against ``gpu_memory_gb``) and its GPU-hours. The cost model is a
roofline: a decode step reads the weights once and every row's KV cache, a prefill or scoring pass
costs 2 x parameters FLOPs per token (+ attention), each at a stated efficiency of the GPU's bandwidth
or bf16 peak, unless a measured throughput is given (``--measured``, from ``benchmarks/gpu.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from entcal.grid import DOWNLOAD_TEMPLATES
from entcal.memory import (  # noqa: F401  (GB, Budget and the planners are this module's public names too)
    GB,
    Budget,
    ModelShape,
    auto_batch_fn,
    generation_batches,
    generation_peak,
    plan_generation,
    plan_scoring,
    scoring_peak,
    weights_per_gpu,
)


@dataclass
class GPUSpec:
    """Peak figures of the GPU a cost estimate assumes (NVIDIA's datasheet, H100 SXM by default)."""

    name: str = "H100 SXM 80GB"
    bf16_tflops: float = 989.0  # dense
    bandwidth_gbs: float = 3350.0
    mfu: float = 0.4  # fraction of the bf16 peak reached by prefill and scoring passes
    bandwidth_efficiency: float = 0.5  # fraction of the bandwidth reached by decode steps


def decode_seconds(shape: ModelShape, gpu: GPUSpec, batch: int, prompt: int, new: int, dtype="bfloat16",
                   quantization="none", extra_forward: int = 0, kv_reads: int = 1) -> float:  # fmt: skip
    """Seconds to decode ``new`` tokens for ``batch`` rows (roofline per step, summed over the
    growing context): each step reads the weights once and the cache of every row ``kv_reads``
    times, and computes 1 + ``extra_forward`` tokens per row."""
    w = shape.weight_bytes(quantization, dtype)
    kvt = shape.kv_bytes_per_token(dtype)
    total = 0.0
    n = 16  # integrate over the context growth in 16 pieces
    for k in range(n):
        ctx = prompt + (k + 0.5) * new / n
        bytes_ = w + kv_reads * batch * ctx * kvt
        flops = batch * (1 + extra_forward) * shape.flops_per_token(ctx)
        step = max(bytes_ / (gpu.bandwidth_gbs * 1e9 * gpu.bandwidth_efficiency), flops / (gpu.bf16_tflops * 1e12 * gpu.mfu))
        total += step * new / n
    return total


def forward_seconds(shape: ModelShape, gpu: GPUSpec, tokens: float, context: float) -> float:
    """Seconds of a compute-bound teacher-forced pass over ``tokens`` tokens at mean context ``context``."""
    return tokens * shape.flops_per_token(context) / (gpu.bf16_tflops * 1e12 * gpu.mfu)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b) if b else 0


def job_rows(config: dict, shapes: dict[str, ModelShape], gpu: GPUSpec, prompt_lens: dict | None = None,
             measured: dict | None = None) -> list[dict]:  # fmt: skip
    """One row per model x dataset of the grid (hub and local models): GPUs, planned batches, peak
    memory per GPU, tokens and estimated GPU-hours of its generation, scoring and calibration jobs.

    ``prompt_lens``: {dataset: typical prompt length} (default: prompt_tokens + 64 for datasets with
    an instruction, + 1 otherwise); memory is planned for the worst case the selection admits
    (prompt + new tokens up to the context). ``measured``: {model: {"generation_tokens_per_s": ...,
    "scoring_tokens_per_s": ...}} from the GPU benchmark, used instead of the roofline.
    """
    g = config["generation"]
    new, n, P = g["max_new_tokens"], g["n_prompts"], g["prompt_tokens"]
    ctx_max = g.get("max_context") or (P + 64 + new)
    cap = g["batch_size"] if isinstance(g["batch_size"], int) else 128
    quant = "nf4" if config.get("precision") == "paper" else "none"
    dtype = config.get("dtype", "bfloat16")
    cal = config.get("calibration", {})
    rows = []
    for name, spec in config["models"].items():
        if spec["source"] == "train" or name not in shapes:
            continue
        shape = shapes[name]
        budget = Budget(gpus=max(1, spec.get("gpus", 1)), gpu_memory_gb=config.get("gpu_memory_gb", 80.0))
        kind = "instruct" if spec["instruct"] else "base"
        settings = [s for s in config["samplers"][kind] if name in s.get("models", [name])]
        for ds, dspec in config["datasets"].items():
            plen = (prompt_lens or {}).get(ds) or P + (64 if dspec.get("builder") in ("writingprompts", "codecontests") else 1)
            gen = plan_generation(shape, budget, ctx_max, cap=cap, prompt_len=ctx_max - new, quantization=quant, dtype=dtype)
            typical = plan_generation(shape, budget, plen + new, cap=cap, prompt_len=plen, quantization=quant, dtype=dtype)
            look = cal.get("candidates", 8)
            sc = plan_scoring(shape, budget, ctx_max, lookahead=look if any(s["sampler"] == "one_step_lookahead" for s in settings) else 0,
                              quantization=quant, dtype=dtype)  # fmt: skip
            hours, gen_tokens = 0.0, 0
            b = max(typical["batch"], 1)
            for s in settings:
                extra, reads = (look + 1, 2) if s["sampler"] == "one_step_lookahead" else (0, 1)
                m = (measured or {}).get(name, {})
                if m.get("generation_tokens_per_s") and not extra:
                    sec = n * new / m["generation_tokens_per_s"]
                else:
                    sec = ceil_div(n, b) * decode_seconds(shape, gpu, b, plen, new, dtype, quant, extra, reads)
                    sec += forward_seconds(shape, gpu, n * plen * (2 if extra else 1), plen / 2)  # prefill
                if config.get("precision") == "paper":  # the NF4 entropy pass over prompt + generation
                    sec += forward_seconds(shape, gpu, n * (plen + new), (plen + new) / 2)
                hours += sec * budget.gpus / 3600
                gen_tokens += n * new
            score_tokens = n * (plen + new)
            m = (measured or {}).get(name, {})
            sec = (score_tokens / m["scoring_tokens_per_s"] if m.get("scoring_tokens_per_s")
                   else forward_seconds(shape, gpu, score_tokens, (plen + new) / 2))  # fmt: skip
            hours += sec * budget.gpus / 3600
            if any(s["sampler"] in ("future_entropy", "one_step_lookahead", "mirostat") for s in settings):
                pre = cal.get("n_windows", 128) * cal.get("prefixes_per_window", 8)
                rollouts = pre * cal.get("candidates", 8) * cal.get("rollouts", 2)
                mean_prefix = P + config["analysis"]["max_len"] / 2
                rb = max(plan_generation(shape, budget, int(mean_prefix) + cal.get("horizon", 32), cap=cap,
                                         quantization=quant, dtype=dtype)["batch"], 1)  # fmt: skip
                sec = ceil_div(rollouts, rb) * decode_seconds(shape, gpu, rb, mean_prefix, cal.get("horizon", 32), dtype, quant)
                sec += forward_seconds(shape, gpu, rollouts * mean_prefix, mean_prefix / 2)
                fit = cal.get("fit_windows", 8) * (P + config["analysis"]["max_len"])
                sec += forward_seconds(shape, gpu, fit * (1 + look), P)
                hours += sec * budget.gpus / 3600
            rows.append({
                "model": name, "dataset": ds, "gpus": budget.gpus, "params_b": round(shape.n_params() / 1e9, 2),
                "gen_batch_worst": gen["batch"], "gen_batch_typical": typical["batch"],
                "gen_peak_gb": round(gen["peak"] / GB, 1), "score_batch": sc["batch"], "score_chunk": sc["chunk"],
                "score_peak_gb": round(sc["peak"] / GB, 1), "gpu_memory_gb": budget.gpu_memory_gb,
                "fits": bool(gen["fits"] and sc["fits"]), "settings": len(settings),
                "generated_tokens": gen_tokens, "scored_tokens": score_tokens, "gpu_hours": round(hours, 2),
            })  # fmt: skip
    return rows


def load_shapes(config: dict, shapes_file: str | Path | None = None) -> dict[str, ModelShape]:
    """Shapes of the grid's models: from ``{downloads_dir}/models/{name}/config.json`` once
    downloaded, from a local model's folder, else from ``shapes_file`` (YAML {name: config.json
    facts}; ``config/model_shapes.yaml`` holds the paper grid's, from the model cards)."""
    import yaml

    table = yaml.safe_load(Path(shapes_file).read_text()) if shapes_file else {}
    out = {}
    for name, spec in config["models"].items():
        downloaded = Path(config.get("downloads_dir", "results/downloads")) / DOWNLOAD_TEMPLATES["model"].format(model=name)
        folder = Path(spec["path"]) if spec["source"] == "local" else downloaded
        if (folder / "config.json").is_file():
            out[name] = ModelShape.from_dir(folder)
        elif name in table:
            out[name] = ModelShape.from_config(table[name])
    return out


def main(argv=None) -> None:
    import argparse

    import pandas as pd
    import yaml

    ap = argparse.ArgumentParser(description="Memory plan and GPU-hours of every model x dataset of a configuration.")
    ap.add_argument("config", help="configuration file (e.g. config/config.yaml)")
    ap.add_argument("--shapes", default=None, help="YAML of model shapes for models not downloaded yet "
                    "(default: config/model_shapes.yaml beside the configuration)")  # fmt: skip
    ap.add_argument("--gpu-memory-gb", type=float, default=None, help="overrides the configuration's gpu_memory_gb")
    ap.add_argument("--measured", default=None, help="CSV of measured throughput (benchmarks/gpu.py): model, "
                    "generation_tokens_per_s, scoring_tokens_per_s")  # fmt: skip
    ap.add_argument("--csv", default=None, help="also write the table here")
    for f, v in vars(GPUSpec()).items():
        ap.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v)
    a = ap.parse_args(argv)
    from snakemake.utils import validate

    config = yaml.safe_load(Path(a.config).read_text())
    root = Path(__file__).resolve().parents[2]
    validate(config, str(root / "config" / "schema.yaml"), set_default=True)
    if a.gpu_memory_gb:
        config["gpu_memory_gb"] = a.gpu_memory_gb
    shapes_file = a.shapes or (Path(a.config).parent / "model_shapes.yaml")
    shapes = load_shapes(config, shapes_file if Path(shapes_file).is_file() else None)
    missing = [m for m, s in config["models"].items() if s["source"] != "train" and m not in shapes]
    gpu = GPUSpec(**{f: getattr(a, f) for f in vars(GPUSpec())})
    measured = None
    if a.measured:
        m = pd.read_csv(a.measured)
        measured = {r["model"]: r for r in m.to_dict("records")}
    df = pd.DataFrame(job_rows(config, shapes, gpu, measured=measured))
    pd.set_option("display.width", 250)
    print(f"GPU: {gpu.name}, {config.get('gpu_memory_gb', 80)} GB each; roofline at {gpu.mfu:.0%} of "
          f"{gpu.bf16_tflops:g} bf16 TFLOP/s and {gpu.bandwidth_efficiency:.0%} of {gpu.bandwidth_gbs:g} GB/s"
          + (f"; measured throughput from {a.measured}" if a.measured else ""))  # fmt: skip
    print(df.to_string(index=False))
    print(f"\n{len(df)} model x dataset pairs; every job fits its GPUs: {bool(df['fits'].all()) if len(df) else 'n/a'}; "
          f"total {df['gpu_hours'].sum():,.0f} GPU-hours" if len(df) else "no hub or local models")  # fmt: skip
    if a.csv:
        df.to_csv(a.csv, index=False)
    if missing:  # left out of the table and the total: the plan is incomplete, which is an error
        raise SystemExit(f"cannot plan {missing} (no shape): the table and the total above leave them out. Download "
                         f"them, or add their config.json facts to {shapes_file}")  # fmt: skip


if __name__ == "__main__":  # python -m entcal.plan config/config.yaml
    main()
