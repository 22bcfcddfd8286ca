"""Memory plan of every GPU job, from the model's ``config.json``, and what the grid costs.

Nothing here guesses a batch: each job's batch (generation), sequences per pass (scoring) and
vocabulary chunk follow from the model's shape (layers, KV heads, head dim, vocabulary, width),
its precision, the job's GPUs and their memory (``gpu_memory_gb``), so that weights, KV cache,
activations and logits fit with a margin. Bytes throughout; GB = 1e9 bytes.

Per GPU (g GPUs hold the layers in turn, ``device_map``; embeddings and head sit on one of them):

- weights: parameters x 2 bytes (bf16), or NF4 (``precision: paper``): the decoder's linear weights at
  4 bits plus their double-quantised block scales (0.516 bytes each), everything else in bf16;
- generation: KV cache = batch x (longest prompt + new tokens) x 2 x layers x KV heads x head dim x
  2 bytes (HF's dynamic cache grows by concatenation: + one layer while it is copied, + 10 % for the
  allocator), the activations of one prefill chunk (``prefill_chunk`` tokens per row: residual,
  q/k/v, attention output and the MLP's three intermediates), and the next-token scores in float32
  (the warpers, the recorder and the calibrated samplers hold up to 8 copies of a batch x vocab array);
- scoring: one teacher-forced pass over batch x (prompt + reference) tokens (activations of one layer,
  the last hidden state of every position, the KV cache where the one-step lookahead needs it) and
  the vocabulary projection ``chunk`` positions at a time in float32 (up to 8 copies);
- fixed: the CUDA context, cuBLAS workspaces and the allocator's slack (``overhead_gb``).

A plan fits when the largest GPU's peak is at most ``utilization`` of its memory. The cost model
(``python -m entcal.plan``) is a roofline: a decode step reads the weights once and every row's KV
cache, a prefill or scoring pass costs 2 x parameters FLOPs per token (+ attention), each at a stated
efficiency of the GPU's bandwidth or bf16 peak, unless a measured throughput is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GB = 1e9
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weights + 8-bit absmax per 64 + fp32 per 256 absmax blocks


@dataclass(frozen=True)
class ModelShape:
    """The architecture facts the plan needs, as written in a model's ``config.json``."""

    model_type: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    o_bias: bool = False  # bias on the attention's output projection
    mlp_bias: bool = False
    mlp_matrices: int = 3  # gated MLP (Llama, Qwen2) = 3, plain MLP (GPT-NeoX) = 2
    norm_params: int = 1  # RMSNorm = 1 vector, LayerNorm = 2 (weight and bias)

    @classmethod
    def from_config(cls, cfg: dict) -> "ModelShape":
        """From a ``config.json`` dict (Llama, Qwen2, Mistral-style, GPT-NeoX)."""
        t = cfg.get("model_type", "llama")
        if "text_config" in cfg:  # multimodal wrappers keep the language model's facts here
            return cls.from_config({"model_type": t, **cfg["text_config"]})
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        common = dict(model_type=t, layers=int(cfg["num_hidden_layers"]), hidden=hidden, heads=heads,
                      head_dim=int(cfg.get("head_dim") or hidden // heads), vocab=int(cfg["vocab_size"]),
                      tied=bool(cfg.get("tie_word_embeddings", False)))  # fmt: skip
        if t == "gpt_neox":
            bias = bool(cfg.get("attention_bias", True))
            return cls(**common, kv_heads=heads, intermediate=int(cfg.get("intermediate_size") or 4 * hidden),
                       qkv_bias=bias, o_bias=bias, mlp_bias=True, mlp_matrices=2, norm_params=2)  # fmt: skip
        attn_bias = bool(cfg.get("attention_bias", False))
        return cls(**common, kv_heads=int(cfg.get("num_key_value_heads") or heads),
                   intermediate=int(cfg["intermediate_size"]), qkv_bias=t == "qwen2" or attn_bias, o_bias=attn_bias,
                   mlp_bias=bool(cfg.get("mlp_bias", False)))  # fmt: skip

    @classmethod
    def from_dir(cls, path: str | Path) -> "ModelShape":
        f = Path(path) / "config.json"
        try:
            return cls.from_config(json.loads(f.read_text()))
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"cannot read the model's shape from {f}: {type(err).__name__}: {err}") from err

    # -- parameter counts -------------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_linear(self) -> int:
        """Weights of one decoder layer's linear maps (the ones NF4 quantises)."""
        d = self.hidden
        return d * self.q_dim + 2 * d * self.kv_dim + self.q_dim * d + self.mlp_matrices * d * self.intermediate

    def layer_other(self) -> int:
        """Biases and norms of one layer (kept in bf16 under NF4)."""
        b = (self.q_dim + 2 * self.kv_dim) * self.qkv_bias + self.hidden * self.o_bias
        b += (self.intermediate * (self.mlp_matrices - 1) + self.hidden) * self.mlp_bias
        return b + 2 * self.norm_params * self.hidden

    def embedding_params(self) -> int:
        """Input embedding plus an untied output head."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def n_params(self) -> int:
        """Total parameters, tied weights counted once."""
        return (self.layers * (self.layer_linear() + self.layer_other()) + self.embedding_params()
                + self.norm_params * self.hidden)  # fmt: skip

    def n_params_nonembedding(self) -> int:
        return self.n_params() - self.embedding_params()

    # -- bytes -----------------------------------------------------------------------------------
    def weight_bytes(self, quantization: str = "none", dtype: str = "bfloat16") -> float:
        if quantization == "nf4":
            linear = self.layers * self.layer_linear()
            return linear * NF4_BYTES + (self.n_params() - linear) * 2
        return self.n_params() * BYTES[dtype]

    def kv_bytes_per_token(self, dtype: str = "bfloat16") -> int:
        """KV cache of one token over all layers (keys and values)."""
        return 2 * self.layers * self.kv_dim * BYTES[dtype]

    def activation_bytes_per_token(self, dtype: str = "bfloat16") -> int:
        """Live activations of one token inside one layer: residual, normed input, q/k/v, attention
        output, and the MLP's intermediates (gate, up, their product)."""
        return (3 * self.hidden + self.q_dim + 2 * self.kv_dim + self.q_dim
                + self.mlp_matrices * self.intermediate) * BYTES[dtype]  # fmt: skip

    def flops_per_token(self, context: float) -> float:
        """Forward FLOPs of one token at a context of ``context`` tokens: 2 per weight it multiplies
        (the head included, the input embedding a lookup) + attention scores and values."""
        matmul = self.layers * self.layer_linear() + self.vocab * self.hidden
        return 2 * matmul + 4 * self.layers * self.q_dim * context


@dataclass
class Budget:
    """What a job has: GPUs and their memory, with the margins the plan keeps."""

    gpus: int = 1
    gpu_memory_gb: float = 80.0
    utilization: float = 0.9  # the plan fills at most this fraction of each GPU
    overhead_gb: float = 2.0  # CUDA context, cuBLAS workspaces, allocator slack, per GPU

    @property
    def usable(self) -> float:
        return self.gpu_memory_gb * GB * self.utilization - self.overhead_gb * GB


def weights_per_gpu(shape: ModelShape, budget: Budget, quantization: str = "none", dtype: str = "bfloat16") -> float:
    """Weights on the fullest GPU: an even share of the layers, plus the embeddings and head, which
    cannot be split, on one GPU."""
    w = shape.weight_bytes(quantization, dtype)
    if budget.gpus <= 1:
        return w
    emb = shape.embedding_params() * 2
    return (w - emb) / budget.gpus + emb


def generation_peak(shape: ModelShape, budget: Budget, batch: int, context: int, *, quantization: str = "none",
                    dtype: str = "bfloat16", prefill_chunk: int = 512, prompt_len: int | None = None) -> dict:  # fmt: skip
    """Bytes on the fullest GPU while generating ``batch`` rows up to ``context`` tokens (longest
    prompt + new tokens). Returns the parts and ``peak``."""
    g = max(1, budget.gpus)
    kv = batch * context * shape.kv_bytes_per_token(dtype) / g
    kv *= (1 + 1 / shape.layers) * 1.1  # one layer copied while its cache grows; allocator rounding
    chunk = min(prefill_chunk, prompt_len or prefill_chunk)
    act = batch * chunk * shape.activation_bytes_per_token(dtype)
    act += batch * chunk * context  # the chunk's boolean attention mask over the keys
    scores = 8 * batch * shape.vocab * 4  # float32 next-token scores: warpers, recorder, calibrated samplers
    parts = {"weights": weights_per_gpu(shape, budget, quantization, dtype), "kv_cache": kv, "activations": act,
             "scores": scores, "overhead": budget.overhead_gb * GB}  # fmt: skip
    parts["peak"] = sum(parts.values())
    return parts


def scoring_peak(shape: ModelShape, budget: Budget, batch: int, seq_len: int, chunk: int, *, lookahead: int = 0,
                 quantization: str = "none", dtype: str = "bfloat16") -> dict:  # fmt: skip
    """Bytes on the fullest GPU for a teacher-forced pass over ``batch`` sequences of ``seq_len``
    tokens with the vocabulary projection ``chunk`` positions at a time (``lookahead``: candidates of
    the one-step lookahead, which keeps the KV cache and adds batch x chunk/K x K candidate rows)."""
    g = max(1, budget.gpus)
    tokens = batch * seq_len
    act = tokens * shape.activation_bytes_per_token(dtype) + batch * seq_len * seq_len  # one layer + bool mask
    hidden = 2 * tokens * shape.hidden * BYTES[dtype]  # last hidden state, and its gather at the scored positions
    kv = tokens * shape.kv_bytes_per_token(dtype) / g if lookahead else 0.0
    logits = 8 * chunk * shape.vocab * 4
    parts = {"weights": weights_per_gpu(shape, budget, quantization, dtype), "activations": act, "hidden": hidden,
             "kv_cache": kv, "logits": logits, "overhead": budget.overhead_gb * GB}  # fmt: skip
    parts["peak"] = sum(parts.values())
    return parts


def plan_generation(shape: ModelShape, budget: Budget, context: int, *, cap: int = 128, prompt_len: int | None = None,
                    quantization: str = "none", dtype: str = "bfloat16", prefill_chunk: int = 512) -> dict:  # fmt: skip
    """The largest batch (at most ``cap``) whose generation peak fits; ``batch`` 0 if even one row
    does not. Returns batch, peak (bytes) and the parts at that batch."""
    best = 0
    lo, hi = 1, cap
    while lo <= hi:  # the peak grows with the batch: bisect
        mid = (lo + hi) // 2
        if generation_peak(shape, budget, mid, context, quantization=quantization, dtype=dtype,
                           prefill_chunk=prefill_chunk, prompt_len=prompt_len)["peak"] <= budget.usable:  # fmt: skip
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    parts = generation_peak(shape, budget, max(best, 1), context, quantization=quantization, dtype=dtype,
                            prefill_chunk=prefill_chunk, prompt_len=prompt_len)  # fmt: skip
    return {"batch": best, "peak": parts["peak"], "parts": parts, "fits": best > 0}


def plan_scoring(shape: ModelShape, budget: Budget, seq_len: int, *, cap: int = 64, lookahead: int = 0,
                 quantization: str = "none", dtype: str = "bfloat16") -> dict:  # fmt: skip
    """Sequences per pass (at most ``cap``) and vocabulary chunk (positions) that fit: the chunk is
    the largest power of two up to 1024 whose float32 logits take at most a tenth of the free memory."""
    free = budget.usable - weights_per_gpu(shape, budget, quantization, dtype)
    chunk = 1024
    while chunk > 16 and 8 * chunk * shape.vocab * 4 > 0.1 * max(free, 0):
        chunk //= 2
    best = 0
    for b in range(1, cap + 1):
        if scoring_peak(shape, budget, b, seq_len, chunk, lookahead=lookahead, quantization=quantization,
                        dtype=dtype)["peak"] > budget.usable:  # fmt: skip
            break
        best = b
    parts = scoring_peak(shape, budget, max(best, 1), seq_len, chunk, lookahead=lookahead, quantization=quantization,
                         dtype=dtype)  # fmt: skip
    return {"batch": best, "chunk": chunk, "peak": parts["peak"], "parts": parts, "fits": best > 0}


def generation_batches(prompt_lens: list[int], max_new: int, fits) -> list[slice]:
    """Consecutive batches over prompts sorted by length (ascending): each batch as large as
    ``fits(batch, longest prompt)`` allows (``fits`` returns the largest batch for that prompt length)."""
    out, i = [], 0
    while i < len(prompt_lens):
        j = i + 1
        while j < len(prompt_lens) and j - i < fits(prompt_lens[j]):
            j += 1
        if fits(prompt_lens[j - 1]) < 1:
            raise ValueError(f"a prompt of {prompt_lens[j - 1]} tokens + {max_new} new tokens does not fit the GPUs "
                             "even alone: give the model more GPUs (models.<name>.gpus) or set gpu_memory_gb")  # fmt: skip
        out.append(slice(i, j))
        i = j
    return out


def auto_batch_fn(shape: ModelShape, budget: Budget, max_new: int, *, cap: int, quantization: str = "none",
                  dtype: str = "bfloat16"):  # fmt: skip
    """``fits(prompt_len)`` for :func:`generation_batches`, memoised per prompt length."""
    memo: dict[int, int] = {}

    def fits(prompt_len: int) -> int:
        if prompt_len not in memo:
            memo[prompt_len] = plan_generation(shape, budget, prompt_len + max_new, cap=cap, prompt_len=prompt_len,
                                               quantization=quantization, dtype=dtype)["batch"]  # fmt: skip
        return memo[prompt_len]

    return fits


# --------------------------------------------------------------------------------------------------
# The grid's cost


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
        folder = Path(spec["path"]) if spec["source"] == "local" else Path(config.get("downloads_dir", "results/downloads")) / "models" / name
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
    if missing:
        print(f"no shape for {missing}: download them or add them to {shapes_file}")
    if a.csv:
        df.to_csv(a.csv, index=False)


if __name__ == "__main__":  # python -m entcal.plan config/config.yaml
    main()
